package relay

import (
	"testing"
	"time"
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
