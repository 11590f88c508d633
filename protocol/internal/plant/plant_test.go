package plant

import "testing"

// The zero Set (every production config) plants nothing; Of plants
// exactly what it is given.
func TestSet(t *testing.T) {
	all := []Bug{IgnoreDrift, NoWait, RenewOnlyWithToken}
	for _, b := range all {
		if (Set{}).Has(b) || Of().Has(b) {
			t.Errorf("the zero Set plants %d", b)
		}
	}
	s := Of(NoWait, RenewOnlyWithToken)
	if !s.Has(NoWait) || !s.Has(RenewOnlyWithToken) || s.Has(IgnoreDrift) {
		t.Errorf("Of(NoWait, RenewOnlyWithToken) = %+v", s)
	}
}
