package sim

import (
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vigil-project/vigil/protocol"
)

var ringTable = flag.Bool("ringtable", false, "TestRingTimingTable: print the whole table of token regenerations in 10 s of a fault-free ring, by ring size and token_timeout (docs/protocol.md, Larger clusters)")

// ringRegenerations runs a fault-free ring of nodes (and witnesses) at
// token_timeout tt, each node's deadline ticks up to late late, for 10 s
// after it settled, and counts the tokens its nodes took for lost and
// regenerated. A timing that validation refuses (below
// protocol.MinTokenTimeout) is an error.
func ringRegenerations(nodes []string, witnesses int, tt, late time.Duration) (int, error) {
	locs := append([]string{}, nodes...)
	for i := range witnesses {
		locs = append(locs, fmt.Sprintf("w%d", i))
	}
	sc := &scenario{}
	for _, cmd := range []string{
		fmt.Sprintf("cluster nodes=%s locators=%s token_timeout=%v late_ticks=%v", strings.Join(nodes, ","), strings.Join(locs, ","), tt, late),
		"await one-active within 2s",
		"run 1s",
		"mark",
		"run 10s",
	} {
		if _, err := sc.exec(cmd); err != nil {
			return 0, err
		}
	}
	n := 0
	for _, id := range nodes {
		n += sc.eventCounts(id)["TokenRegenerated"]
	}
	return n, nil
}

// The token timeout follows the ring (protocol.DefaultTokenTimeoutFor):
// at its default no ring of three to eight nodes takes the token for lost
// in 10 s, on time or with each tick up to 5 ms late, while five nodes at
// the 50 ms of a small ring do, many times, once ticks are late. With
// -ringtable it prints the whole table of docs/protocol.md.
func TestRingTimingTable(t *testing.T) {
	all := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	const late = 5 * time.Millisecond
	if !*ringTable {
		for _, c := range []struct {
			nodes int
			tt    time.Duration
			late  time.Duration
			zero  bool
		}{
			{5, 50 * time.Millisecond, late, false},
			{5, protocol.DefaultTokenTimeoutFor(5, protocol.DefaultTokenInterval), late, true},
			{8, protocol.DefaultTokenTimeoutFor(8, protocol.DefaultTokenInterval), late, true},
			{8, protocol.DefaultTokenTimeoutFor(8, protocol.DefaultTokenInterval), 0, true},
		} {
			n, err := ringRegenerations(all[:c.nodes], 0, c.tt, c.late)
			if err != nil {
				t.Fatalf("%d nodes at %v: %v", c.nodes, c.tt, err)
			}
			if (n == 0) != c.zero {
				t.Errorf("%d nodes at token_timeout %v, ticks up to %v late: %d regenerations in 10 s, want zero: %v", c.nodes, c.tt, c.late, n, c.zero)
			}
		}
		return
	}
	tts := []time.Duration{50, 55, 60, 70, 85, 100, 115}
	var b strings.Builder
	for _, lt := range []time.Duration{0, late} {
		fmt.Fprintf(&b, "\nticks up to %v late:\n| nodes |", lt)
		for _, tt := range tts {
			fmt.Fprintf(&b, " %d ms |", tt)
		}
		b.WriteString(" default |\n")
		for _, shape := range []struct {
			nodes, witnesses int
		}{{3, 0}, {4, 1}, {5, 0}, {6, 0}, {7, 0}, {8, 0}} {
			fmt.Fprintf(&b, "| %d%s |", shape.nodes, map[bool]string{true: " (and a witness)"}[shape.witnesses > 0])
			for _, tt := range append(tts, 0) {
				d := tt * time.Millisecond
				if tt == 0 {
					d = protocol.DefaultTokenTimeoutFor(shape.nodes, protocol.DefaultTokenInterval)
				}
				n, err := ringRegenerations(all[:shape.nodes], shape.witnesses, d, lt)
				switch {
				case err != nil && tt != 0:
					b.WriteString(" refused |")
				case err != nil:
					t.Fatalf("%d nodes at the default %v: %v", shape.nodes, d, err)
				case tt == 0:
					fmt.Fprintf(&b, " %d (%v) |", n, d)
				default:
					fmt.Fprintf(&b, " %d |", n)
				}
			}
			b.WriteString("\n")
		}
	}
	t.Logf("token regenerations in 10 s of a fault-free ring, token_interval %v:%s", protocol.DefaultTokenInterval, b.String())
}
