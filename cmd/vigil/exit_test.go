package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The test binary doubles as the vigil binary: with VIGIL_TEST_ARGS set,
// TestMain runs dispatch on them (separated by \x1f) and exits with its code,
// so exit statuses and deaths by signal are observed from outside, as
// systemd sees them.
func TestMain(m *testing.M) {
	if a, ok := os.LookupEnv("VIGIL_TEST_ARGS"); ok {
		// No core file from the deliberate crash below.
		_ = syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
		code := dispatch(strings.Split(a, "\x1f"), os.Stdout, os.Stderr)
		if os.Getenv("VIGIL_TEST_PANIC_AFTER") != "" {
			// A panic on another goroutine, as a bug in the running
			// supervisor would be.
			// The process ends with the panic, whichever way.
			go panic("vigil test: deliberate panic")
			select {}
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// vigilProcess runs the test binary as `vigil args...` and returns how it
// ended and its stderr.
func vigilProcess(t *testing.T, env []string, args ...string) (syscall.WaitStatus, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "VIGIL_TEST_ARGS="+strings.Join(args, "\x1f"))...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %v: %v", args, err)
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus), stderr.String()
}

// TestSuperviseConfigErrorExits2: the unit's RestartPreventExitStatus=2
// relies on it; exit 1 would be retried StartLimitBurst times.
func TestSuperviseConfigErrorExits2(t *testing.T) {
	dir := t.TempDir()
	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("cluster:\n  name: edge\n  node: a\n  nodes: [{id: b, address: 192.0.2.11:7400}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	notYAML := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(notYAML, []byte("cluster: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"invalid": invalid, "not yaml": notYAML, "missing": filepath.Join(dir, "absent.yaml"),
	} {
		ws, stderr := vigilProcess(t, nil, "supervise", "-c", path)
		if !ws.Exited() || ws.ExitStatus() != exitUsage {
			t.Errorf("%s: supervise ended with %v, want exit status 2; stderr:\n%s", name, ws, stderr)
		}
		if !strings.Contains(stderr, path) {
			t.Errorf("%s: stderr does not name %s:\n%s", name, path, stderr)
		}
	}
}

// TestSupervisePanicIsNotExit2: the Go runtime exits 2 on a panic, which
// the unit would take for a configuration error and not restart. Once
// runSupervise has begun, a panic must end the process by SIGABRT instead.
func TestSupervisePanicIsNotExit2(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.yaml")
	ws, stderr := vigilProcess(t, []string{"VIGIL_TEST_PANIC_AFTER=1"}, "supervise", "-c", missing)
	if !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Errorf("panic after supervise began: ended with %v, want SIGABRT; stderr:\n%s", ws, stderr)
	}
	if !strings.Contains(stderr, "deliberate panic") {
		t.Errorf("stderr lacks the panic:\n%s", stderr)
	}
	// The contrast: the same panic in a command that does not supervise
	// exits 2, which is why supervise must change it.
	ws, stderr = vigilProcess(t, []string{"VIGIL_TEST_PANIC_AFTER=1"}, "version")
	if !ws.Exited() || ws.ExitStatus() != 2 {
		t.Errorf("panic after version: ended with %v, want the runtime's exit status 2; stderr:\n%s", ws, stderr)
	}
}
