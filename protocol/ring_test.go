package protocol

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The token timeout grows with the ring: the default leaves each of the
// others half an interval of lateness, the floor Validate keeps only
// the intervals themselves.
func TestTokenTimeoutForTheRing(t *testing.T) {
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = string(rune('a' + i))
		}
		return out
	}
	for _, tc := range []struct {
		nodes      int
		def, floor time.Duration
	}{
		{1, 50 * time.Millisecond, 10 * time.Millisecond},
		{2, 50 * time.Millisecond, 20 * time.Millisecond},
		{3, 50 * time.Millisecond, 30 * time.Millisecond},
		{4, 55 * time.Millisecond, 40 * time.Millisecond},
		{5, 70 * time.Millisecond, 50 * time.Millisecond},
		{6, 85 * time.Millisecond, 60 * time.Millisecond},
		{8, 115 * time.Millisecond, 80 * time.Millisecond},
	} {
		i := DefaultTokenInterval
		if got := DefaultTokenTimeoutFor(tc.nodes, i); got != tc.def {
			t.Errorf("%d nodes: default token timeout %v, want %v", tc.nodes, got, tc.def)
		}
		if got := MinTokenTimeout(tc.nodes, i); got != tc.floor {
			t.Errorf("%d nodes: floor %v, want %v", tc.nodes, got, tc.floor)
		}
		c := Config{Cluster: "c", Self: "a", Nodes: ids(tc.nodes), Locators: ids(tc.nodes), TwoNode: tc.nodes == 2}
		if got := c.withDefaults().TokenTimeout; got != tc.def {
			t.Errorf("%d nodes: withDefaults token timeout %v, want %v", tc.nodes, got, tc.def)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%d nodes at the default timing: %v", tc.nodes, err)
		}
		c.TokenTimeout = tc.floor
		if err := c.Validate(); err != nil && tc.floor >= 3*i {
			t.Errorf("%d nodes at the floor %v: %v", tc.nodes, tc.floor, err)
		}
		c.TokenTimeout = tc.floor - time.Millisecond
		err := c.Validate()
		var ce *ConfigError
		switch {
		case tc.floor-time.Millisecond < 3*i:
			// The 3 × token_interval rule refuses it first.
			if err == nil {
				t.Errorf("%d nodes: token timeout %v accepted", tc.nodes, c.TokenTimeout)
			}
		case !errors.As(err, &ce) || ce.Field != "token_timeout" || !strings.Contains(ce.Msg, "too short for a ring of"):
			t.Errorf("%d nodes: token timeout %v under the floor: %v", tc.nodes, c.TokenTimeout, err)
		}
	}
}
