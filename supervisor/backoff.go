package supervisor

import (
	"math/rand/v2"
	"time"

	"github.com/vigil-project/vigil/config"
)

// restartDelay is the wait before restart number n of a run of rapid failures
// (n = 1 for the first failure after a stable run). The first restart is
// immediate, as in s6 and systemd's default; then the delay doubles from
// Initial up to Max, with ±20 % jitter so that processes that failed together
// (a shared dependency went away) do not all come back in the same instant.
func restartDelay(b config.Backoff, n int, rnd *rand.Rand) time.Duration {
	if n <= 1 {
		return 0
	}
	d := b.Initial
	for i := 2; i < n && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	if rnd != nil && d > 0 {
		jitter := time.Duration(float64(d) * 0.2 * (2*rnd.Float64() - 1))
		d += jitter
		if d > b.Max {
			d = b.Max
		}
	}
	return d
}
