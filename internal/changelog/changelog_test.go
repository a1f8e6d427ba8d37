package changelog

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/resource"
)

func obj(kind, name, raw string) resource.Object {
	return resource.Object{Kind: kind, Namespace: "default", Name: name, Raw: []byte(raw)}
}

func TestRecordDiffsAndSkipsNoChange(t *testing.T) {
	l := New(0)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, b := obj("VirtualDestination", "a", `{"a":1}`), obj("VirtualDestination", "b", `{"b":1}`)
	l.Record(t0, PathConfigDir, nil, []resource.Object{a, b})
	l.Record(t0.Add(time.Second), PathApply, []resource.Object{a, b}, []resource.Object{a, b}) // nothing changed
	l.Record(t0.Add(2*time.Second), PathApply, []resource.Object{a, b}, []resource.Object{obj("VirtualDestination", "a", `{"a":2}`), obj("FailoverScheme", "c", `{}`)})

	got := l.Entries()
	if len(got) != 2 {
		t.Fatalf("entries: got %d, want 2 (the no-op apply is not a change): %+v", len(got), got)
	}
	newest, oldest := got[0], got[1]
	if oldest.Path != PathConfigDir || !slices.Equal(oldest.Added, []string{"VirtualDestination/default/a", "VirtualDestination/default/b"}) || oldest.ID != 1 {
		t.Errorf("first change: %+v", oldest)
	}
	if newest.Path != PathApply || !newest.At.Equal(t0.Add(2*time.Second)) ||
		!slices.Equal(newest.Added, []string{"FailoverScheme/default/c"}) ||
		!slices.Equal(newest.Changed, []string{"VirtualDestination/default/a"}) ||
		!slices.Equal(newest.Removed, []string{"VirtualDestination/default/b"}) {
		t.Errorf("second change: %+v", newest)
	}
}

func TestBounded(t *testing.T) {
	l := New(3)
	var objs []resource.Object
	for i := range MaxKeys + 7 {
		objs = append(objs, obj("Service", fmt.Sprint("s", i), "{}"))
	}
	l.Record(time.Now(), PathCR, nil, objs)
	for i := range 4 {
		l.Record(time.Now(), PathApply, nil, []resource.Object{obj("Service", fmt.Sprint("x", i), "{}")})
	}
	got := l.Entries()
	if len(got) != 3 {
		t.Fatalf("entries: got %d, want the newest 3", len(got))
	}
	if got[0].ID != 5 || got[2].ID != 3 {
		t.Errorf("kept ids %d..%d, want 5..3", got[0].ID, got[2].ID)
	}
	l = New(1)
	l.Record(time.Now(), PathCR, nil, objs)
	if e := l.Entries()[0]; len(e.Added) != MaxKeys || e.Omitted != 7 {
		t.Errorf("large change: %d keys and %d omitted, want %d and 7", len(e.Added), e.Omitted, MaxKeys)
	}
}

func TestObserveAcks(t *testing.T) {
	l := New(0)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l.Record(t0, PathApply, nil, []resource.Object{obj("Service", "a", "{}")})
	st := reconcile.Status{LastTranslation: t0.Add(-time.Second), Clusters: []reconcile.ClusterStatus{
		{Name: "east", InSync: true, AckedVersion: 4}, {Name: "west", InSync: false, AckedVersion: 3}}}
	l.Observe(st, t0.Add(time.Second))
	if acks := l.Entries()[0].Acks; len(acks) != 0 {
		t.Fatalf("acks before any translation after the change: %v", acks)
	}
	st.LastTranslation = t0.Add(time.Millisecond)
	st.Clusters[0].AckedVersion = 5
	l.Observe(st, t0.Add(2*time.Second))
	acks := l.Entries()[0].Acks
	if len(acks) != 1 || acks["east"] != (Ack{At: t0.Add(2 * time.Second), Version: 5}) {
		t.Fatalf("acks: %v, want east only (west is out of sync)", acks)
	}
	st.Clusters[1].InSync, st.Clusters[1].AckedVersion = true, 6
	st.Clusters[0].AckedVersion = 9
	l.Observe(st, t0.Add(3*time.Second))
	acks = l.Entries()[0].Acks
	if acks["east"].Version != 5 || acks["west"] != (Ack{At: t0.Add(3 * time.Second), Version: 6}) {
		t.Errorf("acks: %v, want east kept at its first ack and west added", acks)
	}
}
