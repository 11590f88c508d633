package netfloat

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vigil-project/vigil/internal/netnstest"
)

// One owner of the floating IPs per network namespace: a second claim in
// the same namespace is refused and names the owner; another namespace is
// free; a closed claim frees its namespace.
func TestOwnNamespace(t *testing.T) {
	n := netnstest.New(t, netnstest.HostSpec{Name: "a"}, netnstest.HostSpec{Name: "b"})
	a, b := n.Hosts["a"], n.Hosts["b"]
	var first *Owner
	if err := a.Run(func() (err error) { first, err = OwnNamespace(); return err }); err != nil {
		t.Fatalf("first claim in a: %v", err)
	}
	t.Cleanup(func() { first.Close() })
	var owned bool
	err := a.Run(func() error {
		owned = NamespaceOwned()
		o, err := OwnNamespace()
		if err == nil {
			o.Close()
		}
		return err
	})
	var oe *NamespaceOwnedError
	if !errors.As(err, &oe) || !errors.Is(err, ErrNamespaceOwned) || !owned {
		t.Fatalf("second claim in a: %v (owned %v), want a NamespaceOwnedError", err, owned)
	}
	self, _ := os.Executable()
	if oe.Pid != os.Getpid() || !strings.Contains(oe.Cmdline, self[strings.LastIndex(self, "/")+1:]) {
		t.Fatalf("refusal names pid %d %q, want %d (%s)", oe.Pid, oe.Cmdline, os.Getpid(), self)
	}
	if !strings.Contains(err.Error(), "pid ") {
		t.Errorf("message %q does not name the owner", err)
	}
	var other *Owner
	if err := b.Run(func() (err error) { other, err = OwnNamespace(); return err }); err != nil {
		t.Fatalf("claim in b, another namespace: %v", err)
	}
	other.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Run(func() error {
		if NamespaceOwned() {
			return errors.New("still owned after Close")
		}
		o, err := OwnNamespace()
		if err == nil {
			o.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("claim in a after the owner closed: %v", err)
	}
}
