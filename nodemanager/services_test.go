package nodemanager

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/ipc"
)

// One process runs every service's manager: each supervisor message goes
// to the service it names, a command for a service the process does not
// run is answered with an error (the supervisor would otherwise wait for
// it), and the channel's end ends every service.
func TestSupervisorMessagesByService(t *testing.T) {
	parent, childF, err := ipc.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	fd, err := unix.Dup(int(childF.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	childF.Close()
	t.Setenv(ipc.EnvFD, strconv.Itoa(fd))
	child, err := ipc.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()

	sh := &shared{sup: child, log: slog.New(slog.DiscardHandler)}
	inbox := map[int]chan *ctlmsg.Msg{0: make(chan *ctlmsg.Msg, 4), 1: make(chan *ctlmsg.Msg, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sh.readSupervisor(cancel, inbox)

	send := func(m *ctlmsg.Msg) {
		t.Helper()
		if err := parent.Send(m, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	h := ctlmsg.Health(false, []string{"dataapp down"})
	h.Slot = 1
	send(h)
	c := ctlmsg.Command(ctlmsg.CmdSwitchover, "a")
	c.ID = 7
	send(c) // slot 0
	select {
	case m := <-inbox[1]:
		if m.Type != ctlmsg.TypeHealth || *m.Healthy || m.Reasons[0] != "dataapp down" {
			t.Errorf("service 1 got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("service 1's health never arrived")
	}
	select {
	case m := <-inbox[0]:
		if m.Type != ctlmsg.TypeCommand || m.ID != 7 {
			t.Errorf("service 0 got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("service 0's command never arrived")
	}

	other := ctlmsg.Command(ctlmsg.CmdMaintenance, "on")
	other.ID, other.Slot = 8, 2
	send(other)
	reply, err := parent.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if reply.Type != ctlmsg.TypeReply || reply.ID != 8 || !strings.Contains(reply.Error, "does not run service 2") {
		t.Errorf("a command for a service not run here: %+v", reply)
	}
	if len(inbox[0])+len(inbox[1]) != 0 {
		t.Error("a message for service 2 went to another service")
	}

	parent.Close()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the supervisor's end closed and the services were not told to stop")
	}
}
