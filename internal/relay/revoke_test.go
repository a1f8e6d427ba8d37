package relay

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// The file revocations survive a new reader (a restarted server) with their times.
func TestFileRevocationsPersist(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	if err := NewFileRevocations(dir).Revoke(t.Context(), "east", at); err != nil {
		t.Fatal(err)
	}
	got, err := NewFileRevocations(dir).Revoked(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got["east"].Equal(at) {
		t.Fatalf("revocations after a restart: %v", got)
	}
}

// Agents asked to register again for a relay CA rotation do not spend their source's budget
// of failed attempts (many agents behind one address all move at once); a revoked
// certificate does.
func TestCARotationIsNoAuthFailure(t *testing.T) {
	for _, c := range []struct {
		reason string
		failed bool
	}{{ReasonRenew, false}, {ReasonUntrusted, false}, {ReasonRevoked, true}, {ReasonDeregistered, true}} {
		err := (&cutError{codes.Unauthenticated, c.reason, "x"}).status()
		if got := authFailure(err); got != c.failed {
			t.Errorf("%s: counted as a failed attempt: %v, want %v", c.reason, got, c.failed)
		}
	}
}
