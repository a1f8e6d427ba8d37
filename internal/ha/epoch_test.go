package ha_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

func TestBehind(t *testing.T) {
	for _, tc := range []struct {
		lock  ha.Lock
		floor uint64
		want  bool
	}{
		{ha.Lock{Name: "west", Epoch: 1}, 2, true},
		{ha.Lock{Name: "west", Epoch: 2}, 2, false}, // the holder's own outputs
		{ha.Lock{Name: "west", Epoch: 3}, 2, false},
		{ha.Lock{}, 2, false}, // nobody holds it: taken above the floor
	} {
		if got := ha.Behind(tc.lock, tc.floor); got != tc.want {
			t.Errorf("Behind(%+v, %d) = %v, want %v", tc.lock, tc.floor, got, tc.want)
		}
	}
}

// Two management servers share a Redis that loses its data after the lock moved to epoch
// 2: its holder takes it again above 2, and when an agent of the passive server reports a
// newer epoch than the lock's, the active server raises the lock above it.
func TestCoordinatorEpochNeverGoesBackwards(t *testing.T) {
	rs := redistest.Start(t)
	client := rs.Client(t)
	store := redisstore.NewHA(client, "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := func(name string) ha.Config {
		return ha.Config{MgmtCluster: name, ActivePassive: true, ReplicaID: name, Interval: 20 * time.Millisecond}
	}
	west := ha.New(cfg("west"), ha.Stores{Lock: store}, log)
	east := ha.New(cfg("east"), ha.Stores{Lock: store}, log)
	ctx, cancel := context.WithCancel(t.Context())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return west.Start(gctx) })
	t.Cleanup(func() { cancel(); _ = g.Wait() })
	activeAt := func(c *ha.Coordinator, min uint64) func() error {
		return func() error {
			if a, e := c.Active(); !a || e < min {
				return fmt.Errorf("active %v at epoch %d, want active at %d or above", a, e, min)
			}
			return nil
		}
	}
	poll.Eventually(t, 5*time.Second, "west takes the lock", activeAt(west, 1))
	g.Go(func() error { return east.Start(gctx) })
	if _, err := store.SwitchLock(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 5*time.Second, "west at epoch 2", activeAt(west, 2))
	poll.Eventually(t, 5*time.Second, "east sees epoch 2", func() error {
		if st := east.Status(); st.Lock == nil || st.Lock.Epoch != 2 || st.Active {
			return fmt.Errorf("east sees %+v", st.Lock)
		}
		return nil
	})

	// Redis loses its data: west, which held the lock, takes it again above epoch 2 (east
	// leaves a vanished lock to its last holder for a lease).
	if err := client.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 5*time.Second, "the lock taken again", func() error {
		l, err := store.ReadLock(ctx)
		if err != nil || l.Name == "" {
			return fmt.Errorf("lock %+v %v", l, err)
		}
		if l.Epoch <= 2 || l.Name != "west" {
			t.Fatalf("lock taken again by %s at epoch %d after west's epoch 2", l.Name, l.Epoch)
		}
		return nil
	})

	// An agent of the passive server reports an epoch above the lock's: the holder raises it.
	l, err := store.ReadLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holder, passive := west, east
	passive.WitnessEpoch(l.Epoch + 5)
	poll.Eventually(t, 5*time.Second, "the holder raises the lock", activeAt(holder, l.Epoch+6))
	if a, _ := passive.Active(); a {
		t.Error("the passive server became active")
	}
}
