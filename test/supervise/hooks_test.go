package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Transition hooks run in order, each under its timeout, off the protocol's
// path: a failing and a hanging hook are logged and the next one still runs.
func TestHooksRunInOrderWithTimeouts(t *testing.T) {
	d := newDaemon(t, "")
	out := filepath.Join(d.dir, "hooks.out")
	d.extra = fmt.Sprintf(`hooks:
  timeout: 300ms
  on_active:
    - [/bin/sh, -c, "echo first $VIGIL_EVENT >> %[1]s; exit 1"]
    - [/bin/sh, -c, "echo second >> %[1]s; exec sleep 5"]
    - [/bin/sh, -c, "echo third $VIGIL_EVENT $VIGIL_NODE $VIGIL_CLUSTER epoch=$VIGIL_EPOCH >> %[1]s"]
`, out)
	d.writeConfig("")
	d.start()
	var lines []string
	d.waitFor("three hooks ran", 20*time.Second, func() bool {
		b, _ := os.ReadFile(out)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(lines) == 3
	})
	if lines[0] != "first active" || lines[1] != "second" || !strings.HasPrefix(lines[2], "third active a test epoch=") {
		t.Errorf("hooks ran as %q", lines)
	}
	log := d.log.String()
	if !strings.Contains(log, `"event":"hook"`) || !strings.Contains(log, "exit status 1") {
		t.Error("failing hook not logged")
	}
	if !strings.Contains(log, "timed out after 300ms") {
		t.Error("hanging hook not cut at its timeout")
	}
	// The protocol did not wait for them: the node became active before the
	// slow hook ended, and it is active now.
	d.waitFor("node manager reports active", 10*time.Second, func() bool {
		st := d.status()
		return st.NodeManager != nil && strings.Contains(string(st.NodeManager), `"role":"active"`)
	})
	d.stop(15 * time.Second)
}
