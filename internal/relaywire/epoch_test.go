package relaywire

import "testing"

// A stale-epoch NACK is recognised whatever sent it, and nothing else is taken for one.
func TestParseStaleEpoch(t *testing.T) {
	if r, h, ok := ParseStaleEpoch(StaleEpochError(1, 2)); !ok || r != 1 || h != 2 {
		t.Errorf("ParseStaleEpoch(StaleEpochError(1, 2)) = %d, %d, %v", r, h, ok)
	}
	for _, s := range []string{"cannot apply", "stale epoch: output epoch 3 is older than applied epoch 2", ""} {
		if _, _, ok := ParseStaleEpoch(s); ok {
			t.Errorf("ParseStaleEpoch(%q) ok", s)
		}
	}
}
