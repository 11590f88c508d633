package supervisor

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-project/vigil/config"
)

func TestRestartDelayGrowsAndCaps(t *testing.T) {
	b := config.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{0, 0, 100, 200, 400, 800, 1000, 1000}
	for n, w := range want {
		if got := restartDelay(b, n, nil); got != w*time.Millisecond {
			t.Errorf("restartDelay(n=%d) = %v, want %v", n, got, w*time.Millisecond)
		}
	}
}

func TestRestartDelayJitterStaysInBounds(t *testing.T) {
	b := config.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	rnd := rand.New(rand.NewPCG(1, 2))
	seen := map[time.Duration]bool{}
	for i := 0; i < 1000; i++ {
		d := restartDelay(b, 3, rnd) // nominal 200ms
		if d < 160*time.Millisecond || d > 240*time.Millisecond {
			t.Fatalf("delay %v outside 200ms ±20%%", d)
		}
		seen[d] = true
		if c := restartDelay(b, 20, rnd); c > b.Max {
			t.Fatalf("capped delay %v above max %v", c, b.Max)
		}
	}
	if len(seen) < 100 {
		t.Fatalf("jitter produced only %d distinct delays", len(seen))
	}
}
