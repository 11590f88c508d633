package ipc

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/ctlmsg"
)

func TestPairRoundTripAndMessageBoundaries(t *testing.T) {
	parent, childF, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	child, err := fromFD(int(childF.Fd()), "child")
	if err != nil {
		t.Fatal(err)
	}
	childF.Close()
	defer child.Close()

	yes := true
	for i := 0; i < 50; i++ {
		if err := parent.Send(&ctlmsg.Msg{Type: ctlmsg.TypeHealth, Healthy: &yes, Reasons: []string{"r" + strconv.Itoa(i)}}, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		m, err := child.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Type != ctlmsg.TypeHealth || m.Healthy == nil || !*m.Healthy || m.Reasons[0] != "r"+strconv.Itoa(i) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	rep := json.RawMessage(`{"role":"active","epoch":7}`)
	if err := child.Send(&ctlmsg.Msg{Type: ctlmsg.TypeReport, Report: rep}, time.Second); err != nil {
		t.Fatal(err)
	}
	m, err := parent.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Report) != string(rep) {
		t.Fatalf("report %s", m.Report)
	}
	if err := child.Send(&ctlmsg.Msg{Type: ctlmsg.TypeReport, Report: json.RawMessage(`"` + string(make([]byte, maxPacket)) + `"`)}, time.Second); err == nil {
		t.Fatal("oversized message accepted")
	}
	child.Close()
	if _, err := parent.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the peer closed: %v, want io.EOF", err)
	}
}

// A Recv waiting for a message returns when its own end is closed (the
// supervisor's reader ends so when the process is gone), with net.ErrClosed.
func TestRecvEndsOnClose(t *testing.T) {
	parent, childF, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer childF.Close()
	got := make(chan error, 1)
	go func() {
		_, err := parent.Recv()
		got <- err
	}()
	// Closing before Recv waits is the same case: the read fails either way.
	parent.Close()
	select {
	case err := <-got:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Recv after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Recv still waiting 10 s after Close")
	}
}

// A child started with the fd inherited at ChildFD finds it through the
// environment, as vigil locator/nodemanager do.
func TestFromEnvInChild(t *testing.T) {
	if os.Getenv("IPC_TEST_CHILD") == "1" {
		c, err := FromEnv()
		if err != nil {
			os.Exit(3)
		}
		m, err := c.Recv()
		if err != nil || m.Cmd != "ping" {
			os.Exit(4)
		}
		if err := c.Send(&ctlmsg.Msg{Type: ctlmsg.TypeReply, ID: m.ID}, time.Second); err != nil {
			os.Exit(5)
		}
		beat, err := ctlmsg.NodeManagerReportMsg(&ctlmsg.NodeManagerReport{Beat: true,
			BeatFields: ctlmsg.BeatFields{Self: "a", Role: "active", Epoch: 7, LeaseValid: true, LeaseRemainingMS: 41}})
		if err != nil || c.TrySend(beat) != nil {
			os.Exit(6)
		}
		os.Exit(0)
	}
	// A child started with Env() sends its beats as frames; one started
	// with only the fd (by a supervisor from before the frames) as JSON.
	for _, tc := range []struct {
		name  string
		env   []string
		frame bool
	}{
		{"Env", Env(), true},
		{"fd only", []string{EnvFD + "=" + strconv.Itoa(ChildFD)}, false},
	} {
		parent, childF, err := Pair()
		if err != nil {
			t.Fatal(err)
		}
		defer parent.Close()
		cmd := exec.Command(os.Args[0], "-test.run=TestFromEnvInChild")
		devnull, _ := os.Open(os.DevNull)
		defer devnull.Close()
		// ExtraFiles[i] becomes fd 3+i: put a placeholder at 3, the channel at 4.
		cmd.ExtraFiles = []*os.File{devnull, childF}
		cmd.Env = append(append(os.Environ(), "IPC_TEST_CHILD=1"), tc.env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		childF.Close()
		if err := parent.Send(&ctlmsg.Msg{Type: ctlmsg.TypeCommand, ID: 42, Cmd: "ping"}, time.Second); err != nil {
			t.Fatal(err)
		}
		m, err := parent.Recv()
		if err != nil || m.Type != ctlmsg.TypeReply || m.ID != 42 {
			t.Fatalf("%s: reply %+v %v", tc.name, m, err)
		}
		buf := make([]byte, maxPacket)
		n, _, err := parent.read(buf, make([]byte, 64))
		if err != nil {
			t.Fatal(err)
		}
		if frame := buf[0] != '{'; frame != tc.frame {
			t.Errorf("%s: beat sent as %q, want a frame: %v", tc.name, buf[:n], tc.frame)
		}
		m, err = ctlmsg.Decode(buf[:n])
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r, err := m.NodeManagerReport()
		if err != nil || !r.Beat || r.Self != "a" || r.Epoch != 7 || !r.LeaseValid || r.LeaseRemainingMS != 41 {
			t.Errorf("%s: beat %+v %v", tc.name, r, err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: child: %v", tc.name, err)
		}
	}
	os.Unsetenv(EnvFD)
	if _, err := FromEnv(); err != ErrNoChannel {
		t.Fatalf("FromEnv without the variable: %v", err)
	}
}

// A reload's config message arrives whole, with every field: the node
// manager applies exactly what the supervisor loaded.
func TestConfigMessageRoundTrip(t *testing.T) {
	parent, childF, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	child, err := fromFD(int(childF.Fd()), "child")
	if err != nil {
		t.Fatal(err)
	}
	childF.Close()
	defer child.Close()

	want := &ctlmsg.Config{
		VIPs: []ctlmsg.VIP{{Address: "192.0.2.100/24", Interface: "eth0"}, {Address: "2001:db8::100/64", Interface: "eth1"}},
		Hooks: ctlmsg.Hooks{
			OnActive:  [][]string{{"/bin/sh", "-c", "echo active"}, {"true"}},
			OnStandby: [][]string{{"/usr/bin/logger", "standby"}},
			Timeout:   1500 * time.Millisecond,
		},
	}
	if err := parent.Send(&ctlmsg.Msg{Type: ctlmsg.TypeConfig, ID: 9, Config: want}, time.Second); err != nil {
		t.Fatal(err)
	}
	m, err := child.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != ctlmsg.TypeConfig || m.ID != 9 || !reflect.DeepEqual(m.Config, want) {
		t.Fatalf("got %+v, config %+v", m, m.Config)
	}
	// An empty list is sent as such (remove every VIP), not as "unset".
	if err := parent.Send(&ctlmsg.Msg{Type: ctlmsg.TypeConfig, ID: 10, Config: &ctlmsg.Config{VIPs: []ctlmsg.VIP{}}}, time.Second); err != nil {
		t.Fatal(err)
	}
	if m, err = child.Recv(); err != nil {
		t.Fatal(err)
	}
	if m.Config == nil || m.Config.VIPs == nil || len(m.Config.VIPs) != 0 {
		t.Fatalf("empty VIP list came back as %+v", m.Config)
	}
}

// Pending tells a message waiting in the queue from an empty queue.
func TestPending(t *testing.T) {
	parent, childF, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	child, err := fromFD(int(childF.Fd()), "child")
	if err != nil {
		t.Fatal(err)
	}
	childF.Close()
	defer child.Close()
	if parent.Pending() {
		t.Fatal("pending on an empty queue")
	}
	if err := child.Send(&ctlmsg.Msg{Type: ctlmsg.TypeReport}, time.Second); err != nil {
		t.Fatal(err)
	}
	if !parent.Pending() {
		t.Fatal("a sent message is not pending")
	}
	if _, err := parent.Recv(); err != nil {
		t.Fatal(err)
	}
	if parent.Pending() {
		t.Fatal("pending after the only message was read")
	}
}

// TrySend never waits for a peer that does not read: it sends while the
// queue has room, then says ErrWouldBlock at once, also while a blocking
// Send is waiting and after one timed out; once the peer reads, it sends
// again.
func TestTrySendNeverWaits(t *testing.T) {
	parent, childF, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	child, err := fromFD(int(childF.Fd()), "child")
	if err != nil {
		t.Fatal(err)
	}
	childF.Close()
	defer child.Close()

	// Run f in a goroutine: a TrySend that waits would hang the test
	// instead of failing it.
	within := func(what string, f func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still waiting after 10 s", what)
			return nil
		}
	}
	msg := &ctlmsg.Msg{Type: ctlmsg.TypeReport}
	sent := 0
	for {
		err := within("TrySend", func() error { return child.TrySend(msg) })
		if errors.Is(err, ErrWouldBlock) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if sent++; sent > 100000 {
			t.Fatal("the queue of a peer that never reads never filled")
		}
	}
	if sent == 0 {
		t.Fatal("TrySend sent nothing into an empty queue")
	}

	// A blocking Send on the full queue holds the channel: TrySend does
	// not queue behind it.
	sendDone := make(chan error, 1)
	go func() { sendDone <- child.Send(msg, 300*time.Millisecond) }()
	for {
		err := within("TrySend beside Send", func() error { return child.TrySend(msg) })
		if !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("TrySend on a full queue: %v, want ErrWouldBlock", err)
		}
		select {
		case err := <-sendDone:
			if err == nil {
				t.Fatal("Send into a full queue that nobody reads succeeded")
			}
		default:
			continue
		}
		break
	}

	// The peer reads one: the timed-out Send's deadline does not stop
	// TrySend from using the room.
	if _, err := parent.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := within("TrySend after a read", func() error { return child.TrySend(msg) }); err != nil {
		t.Fatalf("TrySend with room in the queue: %v", err)
	}
	for i := 0; i < sent; i++ {
		if _, err := parent.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if parent.Pending() {
		t.Fatal("more messages arrived than were reported sent")
	}
}

// Files passed with a message arrive as descriptors of the same open
// files, close-on-exec, and stay open after the sender closed its own; Recv
// closes what it is not asked to keep.
func TestPassFiles(t *testing.T) {
	parent, childF, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	child, err := fromFD(int(childF.Fd()), "child")
	childF.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := child.TrySendFiles(ctlmsg.HoldMsg("pipe"), []int{int(w.Fd())}); err != nil {
		t.Fatal(err)
	}
	w.Close() // the passed descriptor is the only writer left
	m, files, err := parent.RecvFiles()
	if err != nil || m.Type != ctlmsg.TypeHold || m.Hold != "pipe" || len(files) != 1 {
		t.Fatalf("RecvFiles: %+v, %d files, %v", m, len(files), err)
	}
	flags, err := unix.FcntlInt(files[0].Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("passed file flags %#x (%v): want close-on-exec, or every child of the supervisor inherits it", flags, err)
	}
	if _, err := files[0].Write([]byte("x")); err != nil {
		t.Fatalf("write through the passed file: %v", err)
	}
	b := make([]byte, 1)
	if n, err := r.Read(b); n != 1 || err != nil || b[0] != 'x' {
		t.Fatalf("read %q %v", b[:n], err)
	}
	files[0].Close() // now the last writer: the reader sees the end
	if n, err := r.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("after closing the held file: %d %v, want EOF", n, err)
	}
	// Plain Recv closes passed files rather than leaking them.
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := child.TrySendFiles(ctlmsg.HoldMsg("x"), []int{int(w2.Fd())}); err != nil {
		t.Fatal(err)
	}
	w2.Close()
	if m, err := parent.Recv(); err != nil || m.Type != ctlmsg.TypeHold {
		t.Fatalf("Recv: %+v %v", m, err)
	}
	if n, err := r2.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("Recv kept a passed file open: read %d %v, want EOF", n, err)
	}
	if err := child.TrySendFiles(ctlmsg.HoldMsg("many"), make([]int, MaxFiles+1)); err == nil {
		t.Error("more than MaxFiles files accepted")
	}
}
