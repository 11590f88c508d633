package nodemanager

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/netfloat"
)

// Where the kernel has no nf_tables the node manager says so in its
// report (and so in `vigil status`): state unavailable, with the reason;
// a node without VIPs reports nothing.
func TestKernelLeaseReportUnavailable(t *testing.T) {
	m := &manager{host: &netlinkHost{klErr: fmt.Errorf("%w: netlink: protocol not supported", netfloat.ErrKernelLeaseUnavailable)}}
	r := m.kernelLeaseReport()
	if r == nil || r.State != ctlmsg.KernelLeaseUnavailable || !strings.Contains(r.Reason, "protocol not supported") {
		t.Fatalf("report %+v", r)
	}
	b, err := json.Marshal(ctlmsg.NodeManagerReport{KernelLease: r})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"kernel_lease":{"state":"unavailable","reason":`) {
		t.Fatalf("json %s", b)
	}
	if r := (&manager{}).kernelLeaseReport(); r != nil {
		t.Fatalf("a node without VIPs reports %+v", r)
	}
}
