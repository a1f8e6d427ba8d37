package boltstore_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/boltstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/snapshottest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	snapshottest.Run(t, func(t *testing.T) snapshot.Store {
		return open(t, filepath.Join(t.TempDir(), boltstore.FileName))
	})
}

func TestBadItemAlone(t *testing.T) {
	snapshottest.BadItemAlone(t, open(t, filepath.Join(t.TempDir(), boltstore.FileName)))
}

// TestReopenKeepsEverything: what one process wrote, the next one reads, and the
// configuration revision continues from where it was instead of starting again at 0.
func TestReopenKeepsEverything(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), boltstore.FileName)
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	in := snapshot.New(3, 0, []snapshot.Resource{snapshot.NewResource("Service/ns/a", []byte(`{"port":80}`))})
	out := snapshot.New(4, 2, []snapshot.Resource{snapshot.NewResource("Listener//l", []byte(`{"x":"<&>"}`))})
	cfg := snapshot.NewResource("RouteTable/ns/r", []byte(`{"kind":"RouteTable"}`))
	must(t, s.Put(ctx, snapshot.Input, "east", in))
	must(t, s.Put(ctx, snapshot.Output, "east", out))
	must(t, s.PutConfig(ctx, cfg))
	must(t, s.PutConfig(ctx, snapshot.NewResource("gone", []byte(`1`))))
	must(t, s.DeleteConfig(ctx, "gone"))
	rev, err := s.ConfigRevision(ctx)
	must(t, err)
	if rev != 3 {
		t.Fatalf("revision after 2 puts and a delete = %d, want 3", rev)
	}
	must(t, s.Close())

	fi, err := os.Stat(path)
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}

	s = open(t, path)
	got, err := s.Get(ctx, snapshot.Input, "east")
	must(t, err)
	if got.Hash != in.Hash || got.Version != 3 {
		t.Fatalf("input after reopen: version %d hash %s, want 3 %s", got.Version, got.Hash, in.Hash)
	}
	idx, err := s.Index(ctx, snapshot.Output)
	must(t, err)
	if idx["east"] != out.Hash || len(idx) != 1 {
		t.Fatalf("output index after reopen = %v", idx)
	}
	rs, rev2, err := s.ListConfig(ctx)
	must(t, err)
	if rev2 != rev || len(rs) != 1 || rs[0].Hash != cfg.Hash {
		t.Fatalf("config after reopen: revision %d, %v; want revision %d and %s", rev2, rs, rev, cfg.Key)
	}
	must(t, s.PutConfig(ctx, snapshot.NewResource("new", []byte(`2`))))
	if next, err := s.ConfigRevision(ctx); err != nil || next != rev+1 {
		t.Fatalf("revision after a put following reopen = %d, %v; want %d", next, err, rev+1)
	}
}

// TestSecondOpenFailsFast: a second server on the same data directory is refused at once
// (the first holds the file's lock) instead of writing beside the first.
func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), boltstore.FileName)
	open(t, path)
	s, err := boltstore.Open(path)
	if !errors.Is(err, boltstore.ErrLocked) {
		if s != nil {
			_ = s.Close()
		}
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
