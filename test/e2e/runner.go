package e2e

import (
	"fmt"
	"io"
	"sync"
)

// Runner gives programs (the failover benchmark, the demo) the TB the
// harness needs: Fatalf and Skip abort the function passed to Do, and
// cleanups run when Do returns, as in a test.
type Runner struct {
	log      io.Writer
	mu       sync.Mutex
	cleanups []func()
}

type abort struct{ msg string }

// NewRunner logs to w.
func NewRunner(w io.Writer) *Runner { return &Runner{log: w} }

// Do runs fn and then every cleanup it registered, newest first. It
// returns the Fatalf/Skip message as an error.
func (r *Runner) Do(fn func(t TB)) (err error) {
	defer func() {
		r.mu.Lock()
		cs := r.cleanups
		r.cleanups = nil
		r.mu.Unlock()
		for i := len(cs) - 1; i >= 0; i-- {
			cs[i]()
		}
	}()
	defer func() {
		if v := recover(); v != nil {
			a, ok := v.(abort)
			if !ok {
				panic(v)
			}
			err = fmt.Errorf("%s", a.msg)
		}
	}()
	fn(r)
	return nil
}

func (r *Runner) Helper() {}

func (r *Runner) Cleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

func (r *Runner) Logf(format string, args ...any) { fmt.Fprintf(r.log, format+"\n", args...) }

// Errorf only logs: a program has no test result to mark failed.
func (r *Runner) Errorf(format string, args ...any) { r.Logf(format, args...) }

func (r *Runner) Fatalf(format string, args ...any) {
	panic(abort{fmt.Sprintf(format, args...)})
}

func (r *Runner) Skip(args ...any) { panic(abort{fmt.Sprint(args...)}) }
