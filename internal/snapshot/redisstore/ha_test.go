package redisstore_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// The global lock's epoch never goes backwards for someone who knows a higher one: a free
// lock is taken above the floor given, a held lock below a floor anyone gave is raised by
// its holder (and only by it), and switch-active stays above the lock even when the
// counter alone was lost.
func TestLockEpochAboveFloor(t *testing.T) {
	srv := redistest.Start(t)
	testLockEpochAboveFloor(t, srv.Client(t))
}

func testLockEpochAboveFloor(t *testing.T, client redis.UniversalClient) {
	s := redisstore.NewHA(client, "")
	ctx := t.Context()
	epoch := func(l ha.Lock, err error) uint64 {
		t.Helper()
		must(t, err)
		return l.Epoch
	}

	if e := epoch(s.AcquireLockIfFree(ctx, "west", 0)); e != 1 {
		t.Fatalf("first lock at epoch %d, want 1", e)
	}
	if e := epoch(s.SwitchLock(ctx, "west")); e != 2 {
		t.Fatalf("switched lock at epoch %d, want 2", e)
	}

	// The store loses its data; the server knows of epoch 2.
	flushAll(t, client)
	if e := epoch(s.AcquireLockIfFree(ctx, "west", 2)); e != 3 {
		t.Fatalf("lock taken after the loss at epoch %d, want 3 (above the floor 2)", e)
	}
	if e := epoch(s.AcquireLockIfFree(ctx, "east", 9)); e != 3 {
		t.Fatalf("a held lock moved to epoch %d by someone else's acquire", e)
	}

	// Lost again, and taken by a server that knows nothing; west, not holding it, learns
	// that an agent holds epoch 3: it records that in the counter, and east, at its next
	// call, raises the lock above it. Nobody else can raise it.
	flushAll(t, client)
	if e := epoch(s.AcquireLockIfFree(ctx, "east", 0)); e != 1 {
		t.Fatalf("lock taken at epoch %d, want 1", e)
	}
	if l, err := s.AcquireLockIfFree(ctx, "west", 3); err != nil || l.Name != "east" || l.Epoch != 1 {
		t.Fatalf("west's acquire of a held lock changed it: %+v %v", l, err)
	}
	if e := epoch(s.AcquireLockIfFree(ctx, "east", 0)); e != 4 {
		t.Fatalf("holder's lock at epoch %d after west saw epoch 3, want 4", e)
	}
	if e := epoch(s.AcquireLockIfFree(ctx, "east", 4)); e != 4 {
		t.Fatalf("a lock at its floor was raised to %d", e)
	}
	if e := epoch(s.AcquireLockIfFree(ctx, "east", 6)); e != 7 {
		t.Fatalf("the holder knowing of epoch 6 left its lock at %d, want 7", e)
	}
	if e := epoch(s.ReadLock(ctx)); e != 7 {
		t.Fatalf("stored lock at epoch %d, want 7", e)
	}
	if e := epoch(s.SwitchLock(ctx, "west")); e != 8 {
		t.Fatalf("switch after a raise at epoch %d, want 8 (the counter moved with the raise)", e)
	}

	// Only the counter is lost: switch-active still goes above the lock.
	must(t, client.Del(ctx, "meshrelay:{meshrelay}:activelock:epoch").Err())
	if e := epoch(s.SwitchLock(ctx, "east")); e != 9 {
		t.Fatalf("switch without the counter at epoch %d, want 9", e)
	}
}
