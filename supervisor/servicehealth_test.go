package supervisor

import (
	"slices"
	"testing"

	"github.com/vigil-project/vigil/config"
)

// The node's health for the protocol is the service's: the processes it
// lists, critical or not; without a list, the critical ones.
func TestServiceHealthFollowsItsProcesses(t *testing.T) {
	kamailio := critical("kamailio", nil)
	kamailio.cfg.Critical = false
	rtp := critical("rtpengine", nil)
	s := graceSupervisor(kamailio, rtp)
	for _, c := range []struct {
		name      string
		processes []string
		down      *proc
		want      []string
	}{
		{"listed, not critical, down", []string{"kamailio"}, kamailio, []string{"kamailio exited"}},
		{"critical, not listed, down", []string{"kamailio"}, rtp, nil},
		{"no list: critical down", nil, rtp, []string{"rtpengine exited"}},
		{"no list: not critical down", nil, kamailio, nil},
	} {
		s.cfg = &config.Config{Services: []config.Service{{Name: "voice", Processes: c.processes}}}
		kamailio.state, rtp.state = StateRunning, StateRunning
		c.down.state = StateExited
		if got := s.appUnhealthyReasons(); !slices.Equal(got, c.want) {
			t.Errorf("%s: unhealthy because %q, want %q", c.name, got, c.want)
		}
		if got := s.procStatus(c.down).Critical; got != (c.want != nil) {
			t.Errorf("%s: status marks %s critical=%v, want %v", c.name, c.down.cfg.Name, got, c.want != nil)
		}
	}
}
