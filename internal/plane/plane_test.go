package plane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

func TestFind(t *testing.T) {
	conn := func(push, pull int) relay.Connection { return relay.Connection{Push: push, Pull: pull} }
	st := Status{Servers: []Server{
		{ID: "r1", Clusters: []Cluster{{Name: "a", Connection: conn(1, 1)}, {Name: "b", Connection: conn(1, 0)}, {Name: "c", Connection: conn(1, 1)}}},
		{ID: "r2", Clusters: []Cluster{{Name: "c", Connection: conn(1, 1), Sync: reconcile.ClusterStatus{InSync: true}}}},
	}}
	for _, tc := range []struct {
		cluster, at string
		partial     int
	}{
		{"a", "r1", 0},
		{"b", "", 1},
		{"c", "r2", 0}, // connected twice: the server where it is in sync
		{"d", "", 0},
	} {
		at, ok, partial := st.Find(tc.cluster)
		if got := map[bool]string{true: at.Server.ID}[ok]; got != tc.at || len(partial) != tc.partial {
			t.Errorf("Find(%s) = %q, %d partial; want %q, %d", tc.cluster, got, len(partial), tc.at, tc.partial)
		}
	}
}

func TestPublishersSeeEachOther(t *testing.T) {
	rs := redistest.Start(t)
	store := redisstore.NewPlane(rs.Client(t), "")
	log := slog.New(slog.DiscardHandler)
	view := func(id string, clusters ...string) func() Server {
		return func() Server {
			conns := map[string]relay.Connection{}
			for _, c := range clusters {
				conns[c] = relay.Connection{Push: 1, Pull: 1}
			}
			return Local(id, "default", id+":9900", reconcile.Status{}, conns, time.Now())
		}
	}
	const every = 50 * time.Millisecond
	p1 := NewPublisher("r1", store, view("r1", "a"), every, log)
	p2 := NewPublisher("r2", store, view("r2", "b"), every, log)
	ctx1, stop1 := context.WithCancel(t.Context())
	done1 := make(chan error, 1)
	go func() { done1 <- p1.Start(ctx1) }()
	ctx2, stop2 := context.WithCancel(t.Context())
	defer stop2()
	done2 := make(chan error, 1)
	go func() { done2 <- p2.Start(ctx2) }()
	defer func() { stop2(); <-done2 }()

	poll.Eventually(t, 5*time.Second, "r2 sees a on r1", func() error {
		st := p2.Status()
		if st.Servers[0].ID != "r2" {
			t.Fatalf("own view not first: %+v", st.Servers)
		}
		if at, ok, _ := st.Find("a"); !ok || at.Server.ID != "r1" {
			return fmt.Errorf("r2's plane %+v", st)
		}
		return nil
	})
	// r1 stops cleanly: its view is withdrawn at once, not left to expire.
	stop1()
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	views, err := store.PlaneViews(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := views["r1"]; ok || len(views) != 1 {
		t.Fatalf("views after r1 left: %v", keys(views))
	}
	poll.Eventually(t, 5*time.Second, "r2 forgets r1", func() error {
		if _, ok, _ := p2.Status().Find("a"); ok {
			return errors.New("a still found")
		}
		return nil
	})
}

func TestViewsExpire(t *testing.T) {
	rs := redistest.Start(t)
	store := redisstore.NewPlane(rs.Client(t), "")
	ctx := t.Context()
	if err := store.PutPlaneView(ctx, "dead", []byte(`{}`), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := store.PutPlaneView(ctx, "live", []byte(`{}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	views, err := store.PlaneViews(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != 1 || views["live"] == nil {
		t.Fatalf("views %v, want live only", keys(views))
	}
	// The expired view is gone from the store, not only filtered out.
	if n, err := rs.Client(t).HLen(ctx, "meshrelay:{meshrelay}:plane:views").Result(); err != nil || n != 1 {
		t.Fatalf("plane:views holds %d entries (%v), want 1", n, err)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
