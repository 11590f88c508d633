package nodemanager

import (
	"fmt"
	"path/filepath"
	"time"

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

func (m *manager) maintenancePath() string {
	return filepath.Join(m.cfg.Runtime.StateDir, MaintenanceFile)
}

func (m *manager) maintenanceOwner() statefile.Owner {
	return statefile.Owner{Kind: "maintenance", Cluster: m.cfg.Cluster.Name, ID: m.cfg.Cluster.Node}
}

// loadMaintenance applies a persisted `maintenance on` to the new node,
// before it first speaks, so it never claims the role in between. A file
// that does not parse (written atomically, so only a damaged disk does
// that) counts as on: an operator's "out of service" is not guessed away.
func (m *manager) loadMaintenance() {
	var ms maintenanceState
	if _, err := statefile.Load(m.maintenancePath(), m.maintenanceOwner(), &ms); err != nil {
		m.log.Error("maintenance state unreadable; staying in maintenance until `vigil maintenance off`", "event", "persist_error", "path", m.maintenancePath(), "err", err)
		ms.On = true
	}
	if ms.On {
		m.node.SetMaintenance(m.clk.Now(), true)
		m.log.Info("maintenance on, as set before this start", "event", "maintenance", "on", true, "persisted", true, "since", ms.Since.UTC().Format(time.RFC3339))
	}
}

// setMaintenance is `vigil maintenance on|off`: in force at once, then
// written. A write that fails leaves it in force until the next start and
// says so: the operator must know it will not survive a restart.
func (m *manager) setMaintenance(on bool) error {
	m.node.SetMaintenance(m.clk.Now(), on)
	m.log.Info("maintenance "+map[bool]string{true: "on", false: "off"}[on], "event", "maintenance", "on", on)
	if err := statefile.Save(m.maintenancePath(), m.maintenanceOwner(), maintenanceState{On: on, Since: m.clk.Wall()}); err != nil {
		m.log.Error("cannot persist maintenance; in force until vigil restarts", "event", "persist_error", "err", err)
		return fmt.Errorf("maintenance is %s now, but only until vigil restarts: %w", map[bool]string{true: "on", false: "off"}[on], err)
	}
	return nil
}
