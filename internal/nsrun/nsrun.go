// Package nsrun runs a function inside a network namespace, for the
// production code that opens sockets in a namespace it was given
// (netfloat) and for the tests that build namespaces (internal/netnstest).
package nsrun

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// In runs fn on a locked OS thread inside ns, or directly when ns is not
// open. Sockets opened by fn stay in ns. If the thread cannot be switched
// back it stays locked, so the runtime discards it with the goroutine
// rather than reuse a thread in a foreign namespace.
func In(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
