package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The parser takes the throttled groups, the root among them, with their
// figures, and nothing else: not an unthrottled group, not other sections.
func TestParseRTThrottled(t *testing.T) {
	in := []byte(`cfs_rq[0]:/vigil-cp-x/control/nodemanager
  .exec_clock                    : 0.000000
  .rt_throttled                  : 1

rt_rq[0]:/
  .rt_nr_running                 : 0
  .rt_throttled                  : 1
  .rt_time                       : 950.100000
  .rt_runtime                    : 950.000000

rt_rq[0]:/vigil-cp-x/control/locator
  .rt_nr_running                 : 0
  .rt_throttled                  : 0
  .rt_time                       : 12.500000
  .rt_runtime                    : 150.000000

rt_rq[1]:/vigil-cp-x/control/nodemanager
  .rt_nr_running                 : 1
  .rt_throttled                  : 1
  .rt_time                       : 151.203000
  .rt_runtime                    : 150.000000
`)
	got := parseRTThrottled(in)
	if len(got) != 2 {
		t.Fatalf("got %+v, want the root on cpu 0 and the node manager's group on cpu 1", got)
	}
	if g := got[0]; g.Group != "/" || g.CPU != 0 || g.RTTimeMS != 950.1 || g.RuntimeMS != 950 {
		t.Fatalf("got %+v", g)
	}
	if g := got[1]; g.Group != "/vigil-cp-x/control/nodemanager" || g.CPU != 1 || g.RTTimeMS != 151.203 || g.RuntimeMS != 150 {
		t.Fatalf("got %+v", g)
	}
}

// Episodes open while a group is throttled, and close when a sample no
// longer shows it.
func TestRTThrottleEpisodes(t *testing.T) {
	p := &RTThrottleProbe{open: map[string]*RTThrottle{}}
	t0 := time.Unix(1000, 0)
	nm := RTThrottle{Group: "/g/nodemanager", CPU: 0, RTTimeMS: 150.1, RuntimeMS: 150}
	p.sample(t0, []RTThrottle{nm})
	p.sample(t0.Add(100*time.Millisecond), []RTThrottle{nm})
	p.sample(t0.Add(200*time.Millisecond), nil)
	p.sample(t0.Add(300*time.Millisecond), []RTThrottle{nm})
	got, err := p.Take()
	if err != nil || len(got) != 2 {
		t.Fatalf("got %+v, %v: want a closed episode and an open one", got, err)
	}
	if got[0].Last.Sub(got[0].First) != 100*time.Millisecond || !got[1].First.Equal(t0.Add(300*time.Millisecond)) {
		t.Fatalf("episodes %+v", got)
	}
	if again, _ := p.Take(); len(again) != 1 {
		t.Fatalf("the open episode is not kept open: %+v", again)
	}
}

// The real file has the format the parser reads: realtime runqueues with
// the three fields it takes (root only: debugfs).
func TestRTThrottleFormatOfThisKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to read " + SchedDebugPath)
	}
	b, err := os.ReadFile(SchedDebugPath)
	if err != nil {
		t.Skipf("no scheduler debug file on this kernel: %v", err)
	}
	s := string(b)
	i := strings.Index(s, "rt_rq[0]:/")
	if i < 0 {
		t.Fatalf("no realtime runqueue in %s", SchedDebugPath)
	}
	sec := s[i:]
	if j := strings.Index(sec, "\n\n"); j > 0 {
		sec = sec[:j]
	}
	for _, f := range []string{".rt_throttled", ".rt_time", ".rt_runtime"} {
		if !strings.Contains(sec, f) {
			t.Errorf("the root realtime runqueue has no %s:\n%s", f, sec)
		}
	}
	p, err := StartRTThrottleProbe(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
}
