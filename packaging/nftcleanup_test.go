package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-project/vigil/internal/netnstest"
)

// TestPostrmRemovesVigilTables: the package's removal (rpm's %postun with
// $1 = 0, the branch dpkg's remove shares) deletes Vigil's nftables tables
// that a crashed supervisor left, and no other table, and does not fail
// when they are absent. Run in a network namespace of its own; skipped
// where systemd runs (the script would reload it).
func TestPostrmRemovesVigilTables(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here: postrm would call systemctl daemon-reload on this host")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft CLI not installed")
	}
	n := netnstest.New(t, netnstest.HostSpec{Name: "a", Addr: "192.0.2.11/24"})
	h := n.Hosts["a"]
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := h.Command(args[0], args[1:]...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run(`table arp vigil {
	set lease_vips4 {
		type ipv4_addr
	}
}
table inet vigil {
	chain lease_in {
		type filter hook prerouting priority -300; policy accept;
	}
}
table inet operator {
	chain in {
		type filter hook input priority 0; policy accept;
	}
}
`, "nft", "-f", "-")
	script, err := filepath.Abs(filepath.Join("scripts", "postrm"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second time there is nothing to remove
		run("", "sh", script, "0")
		out := run("", "nft", "list", "tables")
		if strings.Contains(out, "vigil") || !strings.Contains(out, "table inet operator") {
			t.Fatalf("after postrm: %s", out)
		}
	}
}
