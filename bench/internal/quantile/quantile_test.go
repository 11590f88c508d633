package quantile

import (
	"math"
	"testing"
)

func TestNearest(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct{ q, want float64 }{{0.5, 5}, {0.99, 10}, {0.1, 1}, {0.11, 2}, {0, 1}, {1, 10}} {
		if got := Nearest(xs, c.q); got != c.want {
			t.Errorf("Nearest(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if xs[0] != 5 {
		t.Error("Nearest sorted its input")
	}
	if !math.IsNaN(Nearest(nil, 0.5)) {
		t.Error("no samples: want NaN")
	}
}
