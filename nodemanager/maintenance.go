package nodemanager

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/statefile"
)

// MaintenanceFile keeps `vigil maintenance on` across restarts of the node
// manager and of vigil (an upgrade, a reboot), in runtime.state_dir: an
// operator who took a node out of service must find it out of service
// until they say otherwise, not eligible again after the package update
// they took it out for. The orderly stop's own maintenance is not written.
const MaintenanceFile = "maintenance.state"

type maintenanceState struct {
	On    bool      `json:"on"`
	Since time.Time `json:"since"`
}

// cfg is the node manager's, narrowed to its service (config.Config.ForService).
func maintenancePath(cfg *config.Config) string {
	return filepath.Join(cfg.Runtime.StateDir, MaintenanceFile)
}

func maintenanceOwner(cfg *config.Config) statefile.Owner {
	return statefile.Owner{Kind: "maintenance", Cluster: cfg.Cluster.Name, ID: cfg.Cluster.Node}
}

// SaveMaintenance writes the maintenance of the node manager that cfg (its
// service's, config.Config.ForService) configures, for it to apply when it
// next starts: the supervisor's way to put a node manager that is not
// running (a restart's backoff, FATAL) in or out of maintenance with the
// others, rather than let it come back eligible.
func SaveMaintenance(cfg *config.Config, on bool, since time.Time) error {
	return statefile.Save(maintenancePath(cfg), maintenanceOwner(cfg), maintenanceState{On: on, Since: since})
}

// LoadMaintenance reads what SaveMaintenance or the node manager wrote:
// whether maintenance is on, and since when (a missing file: off).
func LoadMaintenance(cfg *config.Config) (on bool, since time.Time, err error) {
	var ms maintenanceState
	_, err = statefile.Load(maintenancePath(cfg), maintenanceOwner(cfg), &ms)
	return ms.On, ms.Since, err
}

// loadMaintenance applies a persisted `maintenance on` to the new node,
// before it first speaks, so it never claims the role in between. A file
// that does not parse (written atomically, so only a damaged disk does
// that) counts as on: an operator's "out of service" is not guessed away.
func (m *manager) loadMaintenance() {
	on, since, err := LoadMaintenance(m.cfg)
	if err != nil {
		m.log.Error("maintenance state unreadable; staying in maintenance until `vigil maintenance off`", "event", "persist_error", "path", maintenancePath(m.cfg), "err", err)
		on = true
	}
	if on {
		m.node.SetMaintenance(m.clk.Now(), true)
		m.log.Info("maintenance on, as set before this start", "event", "maintenance", "on", true, "persisted", true, "since", since.UTC().Format(time.RFC3339))
	}
}

// setMaintenance is `vigil maintenance on|off`: in force at once, then
// written. A write that fails leaves it in force until the next start and
// says so: the operator must know it will not survive a restart.
func (m *manager) setMaintenance(on bool) error {
	m.node.SetMaintenance(m.clk.Now(), on)
	m.log.Info("maintenance "+map[bool]string{true: "on", false: "off"}[on], "event", "maintenance", "on", on)
	if err := SaveMaintenance(m.cfg, on, m.clk.Wall()); err != nil {
		m.log.Error("cannot persist maintenance; in force until vigil restarts", "event", "persist_error", "err", err)
		return fmt.Errorf("maintenance is %s now, but only until vigil restarts: %w", map[bool]string{true: "on", false: "off"}[on], err)
	}
	return nil
}
