package redisstore_test

import (
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// Revocations are shared through Redis: what one server revokes another reads, to the second.
func TestRevocationsShared(t *testing.T) {
	srv := redistest.Start(t)
	a, b := redisstore.NewRevocations(srv.Client(t), ""), redisstore.NewRevocations(srv.Client(t), "")
	ctx := t.Context()
	at := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	must(t, a.Revoke(ctx, "east", at))
	must(t, a.Revoke(ctx, "west", at))
	must(t, a.Revoke(ctx, "east", at.Add(time.Hour)))
	got, err := b.Revoked(ctx)
	must(t, err)
	if len(got) != 2 || !got["east"].Equal(at.Add(time.Hour)) || !got["west"].Equal(at) {
		t.Fatalf("revocations read by another server: %v", got)
	}
}
