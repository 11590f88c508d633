package supervise

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The supervisor serves Prometheus metrics on metrics.listen, fed by its own
// status and the control plane's reports.
func TestMetricsEndpoint(t *testing.T) {
	d := newDaemon(t, "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.metrics = l.Addr().String()
	l.Close()
	d.writeConfig(`
  - name: app
    command: [/bin/sleep, "1000"]
`)
	d.start()
	url := fmt.Sprintf("http://%s/metrics", d.metrics)
	var body string
	d.waitFor("metrics show an active node", 20*time.Second, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `vigil_role{role="active",service="default"} 1`)
	})
	for _, want := range []string{
		`vigil_process_up{group="apps",process="app"} 1`,
		`vigil_process_up{group="control",process="nodemanager"} 1`,
		`vigil_scrape_error 0`,
		`vigil_cgroup_cpu_usage_seconds_total{group="control/nodemanager"}`,
		`vigil_epoch{service="default"} `,
		`vigil_sched_late_seconds_bucket{process="nodemanager",service="default",le="0.05"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	d.stop(15 * time.Second)
	if _, err := http.Get(url); err == nil {
		t.Error("metrics endpoint still answers after the supervisor stopped")
	}
}
