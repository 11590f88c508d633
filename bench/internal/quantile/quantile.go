// Package quantile is the percentile the benchmarks print.
package quantile

import (
	"math"
	"slices"
)

// Nearest is the q-quantile of xs by nearest rank (q = 0.99: the value
// 99 % of the samples are at or below), NaN for no samples. xs is not
// changed.
func Nearest(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
