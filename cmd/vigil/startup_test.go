package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/vigilbin"
)

// startupRefusals are files `vigil check` accepted before issue 11 and the
// control plane then could not run with (it crash-looped, or bound or
// claimed the wrong thing). Each gives the key its error must name; the
// config package's table has the exact messages.
var startupRefusals = []struct {
	name, peers, cluster, extra, key string
}{
	{"token_timeout under 3 token_interval", "", "  timing: {token_interval: 20ms, token_timeout: 50ms}\n", "", "cluster.timing.token_timeout"},
	{"lease under 2 token_interval", "", "  timing: {token_interval: 20ms, lease: 30ms, drift_margin: 10ms}\n", "", "cluster.timing.lease"},
	{"9 nodes", nineNodes(), "", "", "cluster.nodes"},
	{"port 65535", "  nodes: [{id: a, address: 127.0.0.1:65535}]\n", "", "", "cluster.nodes[0].address"},
	{"listen port not the entry's", "", "  listen: 0.0.0.0:7500\n", "", "cluster.listen"},
	{"locator port collision",
		"  nodes: [{id: a, address: 127.0.0.1:17400}, {id: b, address: 127.0.0.1:17410}]\n  witnesses: [{id: w, address: 127.0.0.1:17399}]\n",
		"", "", "cluster.witnesses[0].address"},
	{"IPv4-mapped duplicate peer",
		"  nodes: [{id: a, address: 127.0.0.1:17400}, {id: b, address: 127.0.0.1:17410}]\n  witnesses: [{id: w, address: \"[::ffff:127.0.0.1]:17400\"}]\n",
		"", "", "cluster.witnesses[0].address"},
	{"floating IP 0.0.0.0/0", "", "", "vips: [{address: 0.0.0.0/0, interface: eth0}]\n", "vips[0].address"},
	{"floating IP a node's address", "  nodes: [{id: a, address: 192.0.2.11:17400}]\n", "", "vips: [{address: 192.0.2.11/24, interface: eth0}]\n", "vips[0].address"},
	{"control socket path too long", "", "", "runtime: {control_socket: /run/" + strings.Repeat("s", 104) + "}\n", "runtime.control_socket"},
	{"all-zero key", "", "", "", "cluster.key_file"},
}

func nineNodes() string {
	var b strings.Builder
	b.WriteString("  nodes:\n")
	for i, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"} {
		fmt.Fprintf(&b, "    - {id: %s, address: 127.0.0.1:%d}\n", id, 17400+10*i)
	}
	return b.String()
}

// TestStartupRefusesWhatCheckRefuses runs the built binary's check,
// supervise, locator and node manager on each file: all of them load it
// through config.Load, so all must refuse it at once with exit status 2 and
// the same FILE:LINE:COL: KEY message, and none may start anything.
func TestStartupRefusesWhatCheckRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the vigil binary")
	}
	bin, cleanup, err := vigilbin.Build()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	for _, tc := range startupRefusals {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key := filepath.Join(dir, "cluster.key")
			if tc.name == "all-zero key" {
				if err := os.WriteFile(key, []byte(strings.Repeat("00", config.KeySize)+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			} else if err := config.WriteKeyFile(key); err != nil {
				t.Fatal(err)
			}
			peers := tc.peers
			if peers == "" {
				peers = "  nodes: [{id: a, address: 127.0.0.1:17400}]\n"
			}
			runtime := "runtime: {control_socket: " + filepath.Join(dir, "control.sock") + ", state_dir: " + filepath.Join(dir, "state") + ", cgroup: vigil-startup-test}\n"
			if strings.HasPrefix(tc.extra, "runtime:") {
				runtime = ""
			}
			src := "cluster:\n  name: edge\n  node: a\n  key_file: " + key + "\n" + peers + tc.cluster +
				tc.extra + runtime + "control: {realtime: false}\nmetrics: {listen: \"\"}\n"
			path := filepath.Join(dir, "vigil.yaml")
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			var want string
			for _, cmd := range []string{"check", "supervise", "locator", "nodemanager"} {
				t.Run(cmd, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					c := exec.CommandContext(ctx, bin, cmd, "-c", path)
					var stderr bytes.Buffer
					c.Stderr = &stderr
					err := c.Run()
					var ee *exec.ExitError
					if ctx.Err() != nil {
						t.Fatalf("vigil %s did not refuse the file: still running after 30s; stderr:\n%s", cmd, stderr.String())
					}
					if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
						t.Fatalf("vigil %s: %v, want exit status %d; stderr:\n%s", cmd, err, exitUsage, stderr.String())
					}
					got := stderr.String()
					if !strings.HasPrefix(got, path+":") || !strings.Contains(got, ": "+tc.key+": ") {
						t.Errorf("vigil %s: stderr does not name %s in %s:\n%s", cmd, tc.key, path, got)
					}
					if want == "" {
						want = got
					} else if got != want {
						t.Errorf("vigil %s says something else than vigil check:\n%s\nwant:\n%s", cmd, got, want)
					}
				})
			}
			if _, err := os.Stat(filepath.Join(dir, "state")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused start wrote its state directory: %v", err)
			}
		})
	}
}
