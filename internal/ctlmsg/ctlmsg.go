// Package ctlmsg is the vocabulary between the supervisor and its
// control-plane processes (the node manager and the locator): the messages
// on their ipc channel and the reports the processes send up. Both ends, the
// status summary, the metrics and the CLI use these types, so renaming a
// field breaks the build instead of silently sending a reader to its
// fallback.
//
// The JSON keys are the wire format and the `vigil status --json` format:
// they are stable (testdata/report-keys.golden pins them). A supervisor may
// run a control-plane binary newer than itself for a moment during a package
// upgrade; unknown keys are ignored and missing ones read as zero, which
// every reader here tolerates.
package ctlmsg

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Type names a message.
type Type string

// The message types. Down: supervisor -> process; up: process -> supervisor.
const (
	// TypeHealth (down, node manager): the node's health as the supervisor
	// sees it (critical applications up and passing their checks).
	TypeHealth Type = "health"
	// TypeFault (down, node manager, at its start): the previous node
	// manager was fenced while it held the role. The node manager runs
	// hooks.on_fault for it.
	TypeFault Type = "fault"
	// TypeCommand (down): an operator command, answered by a TypeReply of
	// the same ID.
	TypeCommand Type = "command"
	// TypeConfig (down, node manager): the floating IPs and hooks of a
	// reloaded configuration, applied in place; answered by a TypeReply.
	TypeConfig Type = "config"
	// TypeReport (up): the process's status; every report doubles as the
	// heartbeat the supervisor fences on.
	TypeReport Type = "report"
	// TypeReply (up): the answer to a command or config, Error set on
	// failure.
	TypeReply Type = "reply"
	// TypeHold (up, node manager): keep the files passed with this
	// message (ipc.Conn.TrySendFiles) open until I am gone, in place of
	// any held under the same Hold key. Closing a packet socket waits for
	// an RCU grace period (10-30 ms with the kernel's default RCU), twice
	// per floating-IP interface, and in a crashed node manager's exit
	// that delayed its reaping, and with it the crash release. Held by
	// the supervisor, the sockets are released after the exit, off its
	// path.
	TypeHold Type = "hold"
)

// EnvAllServices is set (to "1") by a supervisor in the environment of
// the control-plane processes it starts when it runs one locator and one
// node manager for every service of the host, and files their reports and
// messages by Slot. A control-plane process started without it by a
// supervisor (one from before that, which runs a process per service and
// names the service with --service, the first without) serves only its
// one service: an upgraded binary under the old supervisor, until vigil
// is restarted.
const EnvAllServices = "VIGIL_ALL_SERVICES"

// EnvLeaveOut is set (to "1") by a supervisor that understands a service
// reported not started (NodeManagerReport.StartError): it sets no fence
// deadline for one. Under it, a control-plane process leaves out a
// service that cannot start, runs the others and tries it again. Without
// it (a supervisor from before, after a package upgrade) a node manager
// ends as it did: that supervisor would fence a process whose service
// reports no lease only every second, and with it the services it holds.
const EnvLeaveOut = "VIGIL_LEAVE_OUT"

// The operator commands a TypeCommand carries.
const (
	CmdSwitchover  = "switchover"  // Arg: the node to hand over to, "" for any
	CmdMaintenance = "maintenance" // Arg: "on" or "off"
)

// Msg is one message in either direction. Only the fields of its Type are
// set; build them with the constructors below.
type Msg struct {
	Type Type `json:"type"`

	// Slot is the service a message to the node manager is for (health,
	// fault, command, config): its index in the file's services. One node
	// manager process serves every service of its node.
	Slot int `json:"slot,omitempty"`

	// health
	Healthy *bool    `json:"healthy,omitempty"`
	Reasons []string `json:"reasons,omitempty"` // health: why not; fault: why fenced

	// fault: the epoch the fenced node manager held. reply to a
	// switchover: the epoch the node manager knew when it took the
	// request, with Active, the node active in it ("" if none), so that
	// `vigil switchover` waits for a move after that, not after a report
	// that may lag a change the request raced with.
	Epoch  uint64 `json:"epoch,omitempty"`
	Active string `json:"active,omitempty"`

	// command and reply
	ID    uint64 `json:"id,omitempty"`
	Cmd   string `json:"cmd,omitempty"`
	Arg   string `json:"arg,omitempty"`
	Error string `json:"error,omitempty"`

	// config
	Config *Config `json:"config,omitempty"`

	// hold: what the passed files are ("port eth0"), so that a later
	// hold of the same key replaces them.
	Hold string `json:"hold,omitempty"`

	// report: a NodeManagerReport or a LocatorReport, by who sends it.
	// Set it with NodeManagerReportMsg or LocatorReportMsg and read it
	// with Msg.NodeManagerReport or Msg.LocatorReport.
	Report json.RawMessage `json:"report,omitempty"`

	// beat is a node manager's beat (NodeManagerReport.Beat), kept as
	// its fields until Encode writes it, in the form the peer reads.
	beat *BeatFields
}

// Health is the health message.
func Health(healthy bool, reasons []string) *Msg {
	return &Msg{Type: TypeHealth, Healthy: &healthy, Reasons: reasons}
}

// Fault is the fault message for a node manager fenced at epoch.
func Fault(epoch uint64, reason string) *Msg {
	return &Msg{Type: TypeFault, Epoch: epoch, Reasons: []string{reason}}
}

// Command is an operator command; the sender sets ID.
func Command(cmd, arg string) *Msg { return &Msg{Type: TypeCommand, Cmd: cmd, Arg: arg} }

// ConfigMsg is a reload's floating IPs and hooks; the sender sets ID.
func ConfigMsg(c *Config) *Msg { return &Msg{Type: TypeConfig, Config: c} }

// Reply answers the message with the given ID; err nil is success.
func Reply(id uint64, err error) *Msg {
	m := &Msg{Type: TypeReply, ID: id}
	if err != nil {
		m.Error = err.Error()
	}
	return m
}

// SwitchoverReply is the answer to a switchover command: Reply, with the
// role as the node manager saw it when it took the request.
func SwitchoverReply(id uint64, epoch uint64, active string, err error) *Msg {
	m := Reply(id, err)
	m.Epoch, m.Active = epoch, active
	return m
}

// HoldMsg asks the supervisor to hold the files sent with it under key.
func HoldMsg(key string) *Msg { return &Msg{Type: TypeHold, Hold: key} }

// NodeManagerReportMsg is the node manager's report message; a beat
// (r.Beat) carries only its BeatFields.
func NodeManagerReportMsg(r *NodeManagerReport) (*Msg, error) {
	if r.Beat {
		f := r.BeatFields
		return &Msg{Type: TypeReport, beat: &f}, nil
	}
	return reportMsg(r)
}

// LocatorReportMsg is the locator's report message.
func LocatorReportMsg(r *LocatorReport) (*Msg, error) { return reportMsg(r) }

func reportMsg(r any) (*Msg, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("ctlmsg: encode report: %w", err)
	}
	return &Msg{Type: TypeReport, Report: b}, nil
}

// NodeManagerReport decodes a node manager's report message.
func (m *Msg) NodeManagerReport() (*NodeManagerReport, error) {
	if m.beat != nil {
		return &NodeManagerReport{Beat: true, BeatFields: *m.beat}, nil
	}
	var r NodeManagerReport
	return &r, m.decodeReport(&r)
}

// LocatorReport decodes a locator's report message.
func (m *Msg) LocatorReport() (*LocatorReport, error) {
	var r LocatorReport
	return &r, m.decodeReport(&r)
}

func (m *Msg) decodeReport(into any) error {
	if m.beat != nil {
		return errors.New("ctlmsg: a beat is a node manager's report")
	}
	if m.Type != TypeReport || len(m.Report) == 0 {
		return fmt.Errorf("ctlmsg: a %q message carries no report", m.Type)
	}
	if err := json.Unmarshal(m.Report, into); err != nil {
		return fmt.Errorf("ctlmsg: decode report: %w", err)
	}
	return nil
}

// Config is the part of a reloaded configuration that the node manager
// applies without restarting. It is always the whole desired state, never a
// difference, so applying it twice changes nothing.
type Config struct {
	VIPs  []VIP `json:"vips"`
	Hooks Hooks `json:"hooks"`
}

// VIP is one floating address as configured (vips[]).
type VIP struct {
	Address   string `json:"address"` // prefix, e.g. 192.0.2.100/24
	Interface string `json:"interface"`
}

// Hooks are the transition hooks as configured (hooks:).
type Hooks struct {
	OnActive  [][]string    `json:"on_active,omitempty"`
	OnStandby [][]string    `json:"on_standby,omitempty"`
	OnFault   [][]string    `json:"on_fault,omitempty"`
	Timeout   time.Duration `json:"timeout_ns"`
}
