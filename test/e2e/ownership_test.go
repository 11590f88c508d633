package e2e

import (
	"testing"
	"time"
)

// A move is the address going to another node; the holder taking it back
// after nobody held it is a retake, not a move.
func TestOwnershipMovesAndRetakes(t *testing.T) {
	for _, c := range []struct {
		seq            []string
		moves, retakes int
		final          string
	}{
		{[]string{"a"}, 0, 0, "a"},
		{[]string{"a", "", "b"}, 1, 0, "b"},          // failover
		{[]string{"a", "", "a"}, 0, 1, "a"},          // the active paused and took it back
		{[]string{"a", "", "a", "", "b"}, 1, 1, "b"}, // then lost it for real
		{[]string{"a", "ab", "b"}, 1, 0, "b"},        // make-before-break
		{[]string{"a", "", "b", "", "a"}, 2, 0, "a"}, // there and back
		{[]string{"", "a", "", "a"}, 1, 1, "a"},      // first taken, then retaken
	} {
		p := &OwnershipProbe{stop: make(chan struct{}), done: make(chan struct{})}
		at := time.Now()
		for _, h := range c.seq {
			p.changes = append(p.changes, Change{At: at, Holder: h})
			at = at.Add(time.Millisecond)
		}
		close(p.done)
		o := p.Stop()
		if o.Moves != c.moves || o.Retakes != c.retakes || o.Final != c.final {
			t.Errorf("%q: moves %d retakes %d final %q, want %d %d %q", c.seq, o.Moves, o.Retakes, o.Final, c.moves, c.retakes, c.final)
		}
	}
}
