package netfloat

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownerName is the abstract unix socket that marks the one Vigil holding
// floating IPs in a network namespace. Abstract names belong to the network
// namespace (unix(7)) and vanish with the last descriptor, so a crashed
// owner never leaves it behind.
const ownerName = "@vigil/floating-ips"

// ErrNamespaceOwned: another live process holds floating IPs in this
// network namespace (NamespaceOwnedError says which).
var ErrNamespaceOwned = errors.New("netfloat: another vigil holds floating IPs in this network namespace")

// NamespaceOwnedError names the process that owns the namespace's floating
// IPs: everything Vigil keeps in the kernel is the namespace's (its
// nftables tables with the kernel lease, the address mark a starting node
// manager and the fence remove), so a second owner would undo the first's.
type NamespaceOwnedError struct {
	Pid     int    // 0 when it could not be learnt
	Cmdline string // its command line, "" when unknown
}

func (e *NamespaceOwnedError) Error() string {
	who := "another process"
	if e.Pid > 0 {
		who = "pid " + strconv.Itoa(e.Pid)
		if e.Cmdline != "" {
			who += " (" + e.Cmdline + ")"
		}
	}
	return fmt.Sprintf("%v: %s", ErrNamespaceOwned, who)
}

// Unwrap makes errors.Is(err, ErrNamespaceOwned) true.
func (e *NamespaceOwnedError) Unwrap() error { return ErrNamespaceOwned }

// Owner is this process's claim on the floating IPs of its network
// namespace, held until Close.
type Owner struct {
	l *net.UnixListener
}

// OwnNamespace claims the floating IPs of the calling thread's network
// namespace for this process, or returns a *NamespaceOwnedError naming the
// process that has them.
func OwnNamespace() (*Owner, error) {
	addr := &net.UnixAddr{Name: ownerName, Net: "unix"}
	l, err := net.ListenUnix("unix", addr)
	if err == nil {
		o := &Owner{l: l}
		go o.serve()
		return o, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("netfloat: claim the network namespace: %w", err)
	}
	return nil, owner()
}

// serve answers whoever asks who the owner is: the connection itself
// tells them (SO_PEERCRED); nothing is read or written.
func (o *Owner) serve() {
	for {
		c, err := o.l.Accept()
		if err != nil {
			return // closed
		}
		c.Close()
	}
}

// Close gives the namespace up.
func (o *Owner) Close() error {
	if o == nil {
		return nil
	}
	return o.l.Close()
}

// owner describes the process listening on ownerName.
func owner() error {
	e := &NamespaceOwnedError{}
	c, err := net.DialTimeout("unix", ownerName, time.Second)
	if err != nil {
		return e
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return e
	}
	_ = raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			e.Pid = int(cred.Pid)
		}
	})
	if e.Pid > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", e.Pid)); err == nil {
			e.Cmdline = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return e
}

// NamespaceOwned reports whether a live process owns this network
// namespace's floating IPs (OwnNamespace), without claiming them.
func NamespaceOwned() bool {
	c, err := net.DialTimeout("unix", ownerName, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
