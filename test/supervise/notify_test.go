package supervise

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sd_notify against a real NOTIFY_SOCKET: READY=1 only once the child sits in
// its cgroup, STATUS= with a summary, WATCHDOG=1 at about half WATCHDOG_USEC,
// and none while the main loop is frozen.
func TestSdNotify(t *testing.T) {
	d := newDaemon(t, `
  - name: app
    command: [/bin/sleep, "1000"]
`)
	sockPath := filepath.Join(d.dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d.env = []string{"NOTIFY_SOCKET=" + sockPath, "WATCHDOG_USEC=200000"}

	type msg struct {
		at   time.Time
		text string
		// appPlaced: the app's cgroup had a process when the message arrived.
		appPlaced bool
	}
	msgs := make(chan msg, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			m := msg{at: time.Now(), text: string(buf[:n])}
			if strings.Contains(m.text, "READY=1") {
				m.appPlaced = appCgroupPopulated(d.subtree, "app")
			}
			msgs <- m
		}
	}()
	d.start()

	var ready *msg
	var watchdogs []time.Time
	deadline := time.After(15 * time.Second)
	sawStatus := false
collect:
	for {
		select {
		case m := <-msgs:
			if strings.Contains(m.text, "READY=1") {
				mm := m
				ready = &mm
			}
			if strings.Contains(m.text, "STATUS=") && strings.Contains(m.text, "1/1 processes running") {
				sawStatus = true
			}
			if strings.Contains(m.text, "WATCHDOG=1") {
				watchdogs = append(watchdogs, m.at)
				if len(watchdogs) >= 20 {
					break collect
				}
			}
		case <-deadline:
			t.Fatalf("only %d watchdog pings in 15s (ready=%v)", len(watchdogs), ready != nil)
		}
	}
	if ready == nil {
		t.Fatal("no READY=1")
	}
	if !ready.appPlaced {
		t.Error("READY=1 arrived before the app was in its cgroup")
	}
	if !sawStatus {
		t.Error("no STATUS= with the process summary")
	}
	// 20 pings at ~100 ms: allow a noisy machine (or an emulated VM)
	// plenty of slack; what matters is that pings come, at about that pace.
	span := watchdogs[len(watchdogs)-1].Sub(watchdogs[0])
	per := span / time.Duration(len(watchdogs)-1)
	if per < 50*time.Millisecond || per > 400*time.Millisecond {
		t.Errorf("watchdog every %v on average, want about 100ms", per)
	}

	// Freeze the supervisor: no WATCHDOG=1 while it is stopped.
	if err := d.cmd.Process.Signal(stopSig); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // a ping in flight may still arrive
	drain(msgs)
	time.Sleep(600 * time.Millisecond)
	for _, m := range drain(msgs) {
		if strings.Contains(m.text, "WATCHDOG=1") {
			t.Errorf("watchdog ping while the supervisor was stopped: %q", m.text)
		}
	}
	_ = d.cmd.Process.Signal(contSig)
	d.stop(15 * time.Second)
	var stopping bool
	for _, m := range drain(msgs) {
		stopping = stopping || strings.Contains(m.text, "STOPPING=1")
	}
	if !stopping {
		t.Error("no STOPPING=1 on shutdown")
	}
}

func drain[T any](c chan T) []T {
	var out []T
	for {
		select {
		case m, ok := <-c:
			if !ok {
				return out
			}
			out = append(out, m)
		default:
			return out
		}
	}
}

func appCgroupPopulated(subtree, app string) bool {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		dir := ""
		switch {
		case f[1] == "memory":
			dir = filepath.Join("/sys/fs/cgroup/memory", f[2])
		case f[1] == "" && isV2():
			dir = filepath.Join("/sys/fs/cgroup", f[2])
		default:
			continue
		}
		procs, err := os.ReadFile(filepath.Join(dir, subtree, "apps", app, "cgroup.procs"))
		return err == nil && len(strings.TrimSpace(string(procs))) > 0
	}
	return false
}
