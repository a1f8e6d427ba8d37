package reconcile_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
	"github.com/meshrelay/meshrelay/internal/translate"
	"github.com/meshrelay/meshrelay/internal/translate/translatetest"
)

// unreadableStore fails every read while down is set, as a store that cannot be read at
// start (Redis not up yet, a file that does not open) would.
type unreadableStore struct {
	*memstore.Store
	down atomic.Bool
}

func (u *unreadableStore) err(what string) error {
	return fmt.Errorf("%s: connection refused: %w", what, snapshot.ErrUnavailable)
}

func (u *unreadableStore) List(ctx context.Context, kind snapshot.Kind) (map[string]*snapshot.Snapshot, error) {
	if u.down.Load() {
		return nil, u.err("list")
	}
	return u.Store.List(ctx, kind)
}

func (u *unreadableStore) ListConfig(ctx context.Context) ([]snapshot.Resource, uint64, error) {
	if u.down.Load() {
		return nil, 0, u.err("list config")
	}
	return u.Store.ListConfig(ctx)
}

func (u *unreadableStore) ConfigRevision(ctx context.Context) (uint64, error) {
	if u.down.Load() {
		return 0, u.err("config revision")
	}
	return u.Store.ConfigRevision(ctx)
}

// startWithRegistry is start with a registry the test can read the metrics of.
func startWithRegistry(t *testing.T, cfg reconcile.Config, store snapshot.Store) (*reconcile.Reconciler, *prometheus.Registry) {
	t.Helper()
	cfg.Tick = tick
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := reconcile.New(cfg, store, translate.NewTranslator(), nil, log, reg)
	return r, reg
}

func configNotLoaded(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "meshrelay_safe_mode_config_not_loaded" {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatal("meshrelay_safe_mode_config_not_loaded not exported")
	return 0
}

// holdsFor checks, for a few ticks, that r publishes nothing and says why in safe mode.
func holdsFor(t *testing.T, r *reconcile.Reconciler, reason string) {
	t.Helper()
	poll.Until(t, wait, "safe mode naming "+reason, func() bool {
		st := r.Status()
		return st.SafeMode.Active && strings.Contains(st.SafeMode.Reason, reason)
	})
	for range 10 {
		time.Sleep(tick)
		if st := r.Status(); st.Translations != 0 || !st.SafeMode.Active {
			t.Fatalf("translated while the configuration is incomplete: %+v", st)
		}
	}
}

// A server whose stored configuration cannot be read at start holds translation, even with
// safe mode off and every input present: publishing from the config directory alone would
// drop what was applied through the API. It says so in /status and the metric.
func TestHoldsUntilStoredConfigLoaded(t *testing.T) {
	ctx := t.Context()
	store := &unreadableStore{Store: memstore.New()}
	west := clusters(t, "west")
	if err := store.PutConfig(ctx, west[0].Resource()); err != nil {
		t.Fatal(err)
	}
	store.down.Store(true)
	dir := clusters(t, "east")
	r, reg := startWithRegistry(t, reconcile.Config{SafeMode: false}, store)
	r.SetDirConfig(dir)
	run(t, r)
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web"), "west": input(t, 1, "api")}
	r.PutInput(ctx, "east", inputs["east"])
	r.PutInput(ctx, "west", inputs["west"])

	holdsFor(t, r, "configuration not loaded from the store yet")
	if st := r.Status(); !strings.Contains(st.SafeMode.Reason, snapshot.ErrUnavailable.Error()) || st.SafeMode.Since.IsZero() {
		t.Errorf("safe mode %+v does not carry the store error and its start", st.SafeMode)
	}
	if r.Output("east") != nil {
		t.Fatal("east has an output made without the stored configuration")
	}
	if v := configNotLoaded(t, reg); v != 1 {
		t.Fatalf("meshrelay_safe_mode_config_not_loaded = %v while held, want 1", v)
	}

	store.down.Store(false)
	want := expect(t, append(dir, west...), inputs)
	poll.Until(t, wait, "outputs of the directory and the stored configuration", publishes(r, want))
	if st := r.Status(); st.SafeMode.Active {
		t.Errorf("safe mode still active after loading: %+v", st.SafeMode)
	}
	if v := configNotLoaded(t, reg); v != 0 {
		t.Errorf("meshrelay_safe_mode_config_not_loaded = %v after loading, want 0", v)
	}
}

// A stored resource that does not decode (written by another version, or damaged) holds
// translation instead of being left out of it, until it is deleted.
func TestUndecodableStoredConfigHolds(t *testing.T) {
	ctx := t.Context()
	store := memstore.New()
	const key = "FutureKind/shop/x"
	bad := snapshot.NewResource(key, []byte(`{"apiVersion":"meshrelay.io/v1alpha1","kind":"FutureKind","metadata":{"name":"x","namespace":"shop"}}`))
	if err := store.PutConfig(ctx, bad); err != nil {
		t.Fatal(err)
	}
	dir := clusters(t, "east")
	r, reg := startWithRegistry(t, reconcile.Config{SafeMode: false}, store)
	r.SetDirConfig(dir)
	run(t, r)
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(ctx, "east", inputs["east"])

	holdsFor(t, r, key)
	if v := configNotLoaded(t, reg); v != 1 {
		t.Fatalf("meshrelay_safe_mode_config_not_loaded = %v while held, want 1", v)
	}
	if err := r.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, wait, "outputs once the resource is deleted", publishes(r, expect(t, dir, inputs)))
	poll.Until(t, wait, "safe mode released", func() bool { return !r.Status().SafeMode.Active })
}

// forgetfulStore is a real memstore that can be replaced by an empty one, as a Redis that
// restarted without persistence: its configuration revision goes back in time.
type forgetfulStore struct {
	mu  sync.Mutex // guards cur
	cur *memstore.Store
}

func (f *forgetfulStore) store() *memstore.Store { f.mu.Lock(); defer f.mu.Unlock(); return f.cur }
func (f *forgetfulStore) forget()                { f.mu.Lock(); defer f.mu.Unlock(); f.cur = memstore.New() }

func (f *forgetfulStore) Get(ctx context.Context, k snapshot.Kind, c string) (*snapshot.Snapshot, error) {
	return f.store().Get(ctx, k, c)
}
func (f *forgetfulStore) Put(ctx context.Context, k snapshot.Kind, c string, s *snapshot.Snapshot) error {
	return f.store().Put(ctx, k, c, s)
}
func (f *forgetfulStore) Delete(ctx context.Context, k snapshot.Kind, c string) error {
	return f.store().Delete(ctx, k, c)
}
func (f *forgetfulStore) Write(ctx context.Context, batch []snapshot.Write) []error {
	return f.store().Write(ctx, batch)
}
func (f *forgetfulStore) List(ctx context.Context, k snapshot.Kind) (map[string]*snapshot.Snapshot, error) {
	return f.store().List(ctx, k)
}
func (f *forgetfulStore) Index(ctx context.Context, k snapshot.Kind) (map[string]string, error) {
	return f.store().Index(ctx, k)
}
func (f *forgetfulStore) PutConfig(ctx context.Context, r snapshot.Resource) error {
	return f.store().PutConfig(ctx, r)
}
func (f *forgetfulStore) DeleteConfig(ctx context.Context, key string) error {
	return f.store().DeleteConfig(ctx, key)
}
func (f *forgetfulStore) ListConfig(ctx context.Context) ([]snapshot.Resource, uint64, error) {
	return f.store().ListConfig(ctx)
}
func (f *forgetfulStore) ConfigRevision(ctx context.Context) (uint64, error) {
	return f.store().ConfigRevision(ctx)
}
func (f *forgetfulStore) Ping(ctx context.Context) error { return f.store().Ping(ctx) }

// followerRole is an active replica that is not the leader (the leader restores a store
// that lost data; the others must not adopt the loss meanwhile).
type followerRole struct{}

func (followerRole) Active() (bool, uint64) { return true, 1 }
func (followerRole) Leader() bool           { return false }
func (followerRole) Owns(string) bool       { return true }

// metricValue is the value of the unlabelled gauge or counter name in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not exported", name)
	return 0
}

// A replica that is not the leader must not adopt the shorter configuration of a store that
// lost data: it keeps translating with what it holds (loudly: log, metric, store error in
// /status) until the store holds all of it again, and then follows the store.
func TestStoreLostConfigIsNotAdopted(t *testing.T) {
	ctx := t.Context()
	store := &forgetfulStore{cur: memstore.New()}
	r, reg := startWithRegistry(t, reconcile.Config{Role: followerRole{}}, store)
	config := clusters(t, "a", "b", "c")
	if err := r.Apply(ctx, config); err != nil {
		t.Fatal(err)
	}
	// More history than the restore below writes, as in a store that lived a while.
	for range 3 {
		if err := r.Apply(ctx, config[:1]); err != nil {
			t.Fatal(err)
		}
	}
	run(t, r)
	poll.Until(t, wait, "config loaded", func() bool { return r.Ready() == nil && len(r.Config()) == 3 })
	time.Sleep(3 * tick)

	store.forget() // Redis restarted empty
	poll.Until(t, wait, "the loss reported", func() bool { return strings.Contains(r.Status().StoreError, "lost applied configuration") })
	if got := len(r.Config()); got != 3 {
		t.Fatalf("after the store lost its data the replica holds %d resources, want its 3", got)
	}
	if v := metricValue(t, reg, "meshrelay_store_config_lost"); v != 1 {
		t.Errorf("meshrelay_store_config_lost = %v, want 1", v)
	}

	// The leader writes back what it holds: the replica follows the store again.
	for _, o := range config {
		if err := store.PutConfig(ctx, o.Resource()); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, wait, "the loss cleared", func() bool { return r.Status().StoreError == "" })
	if v := metricValue(t, reg, "meshrelay_store_config_lost"); v != 0 {
		t.Errorf("meshrelay_store_config_lost = %v after the restore, want 0", v)
	}
	if got := len(r.Config()); got != 3 {
		t.Fatalf("after the restore the replica holds %d resources, want 3", got)
	}
}

// Every registered cluster's output carries its mesh identity. Until the identity is there
// (a server restarted on an emptied shared store, before the leader issued them again)
// nothing is translated, and when one disappears the outputs already published stay as they
// are: an output without it would take the identity away from every gateway of the cluster.
func TestHoldsUntilEveryMeshIdentity(t *testing.T) {
	ctx := t.Context()
	var mu sync.Mutex
	certs := translatetest.Certs("east")
	source := func(clusters []string) map[string]translate.ClusterCert {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]translate.ClusterCert{}
		for _, c := range clusters {
			if b, ok := certs[c]; ok {
				out[c] = b
			}
		}
		return out
	}
	setCerts := func(c map[string]translate.ClusterCert) {
		mu.Lock()
		certs = c
		mu.Unlock()
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := reconcile.New(reconcile.Config{SafeMode: false, Tick: tick}, memstore.New(), translate.NewTranslator(), source, log, reg)
	config := clusters(t, "east", "west")
	r.SetDirConfig(config)
	run(t, r)
	r.PutInput(ctx, "east", input(t, 1, "web"))
	r.PutInput(ctx, "west", input(t, 1, "api"))

	holdsFor(t, r, "mesh identity not issued or not read from the store yet for clusters west")
	if r.Output("east") != nil || r.Output("west") != nil {
		t.Fatal("an output was published while west has no mesh identity")
	}
	if v := configNotLoaded(t, reg); v != 1 {
		t.Errorf("meshrelay_safe_mode_config_not_loaded = %v while held, want 1", v)
	}

	setCerts(translatetest.Certs("east", "west"))
	r.Kick()
	poll.Until(t, wait, "both outputs once west's identity is there", func() bool { return r.Output("east") != nil && r.Output("west") != nil })
	for _, c := range []string{"east", "west"} {
		if !hasKind(r.Output(c), "EnvoySecret") {
			t.Fatalf("%s's output carries no mesh identity (EnvoySecret)", c)
		}
	}
	if st := r.Status(); st.SafeMode.Active {
		t.Fatalf("still held once every identity is there: %+v", st.SafeMode)
	}
	east, west := r.Output("east").Hash, r.Output("west").Hash

	// The identities disappear (the shared store emptied); inputs keep changing.
	setCerts(nil)
	r.PutInput(ctx, "east", input(t, 2, "web", "shop"))
	holdsForWithOutputs(t, r, "mesh identity not issued or not read from the store yet for clusters east, west")
	if got := r.Output("east").Hash; got != east {
		t.Error("east's output changed while its mesh identity was missing")
	}
	if got := r.Output("west").Hash; got != west {
		t.Error("west's output changed while its mesh identity was missing")
	}

	setCerts(translatetest.Certs("east", "west"))
	r.Kick()
	poll.Until(t, wait, "east's new input translated once the identities are back", func() bool { return r.Output("east").Hash != east })
	if !hasKind(r.Output("east"), "EnvoySecret") {
		t.Fatal("east's output carries no mesh identity (EnvoySecret)")
	}
}

// holdsForWithOutputs is holdsFor for a reconciler that translated before: the translation
// count stays where it is.
func holdsForWithOutputs(t *testing.T, r *reconcile.Reconciler, reason string) {
	t.Helper()
	poll.Until(t, wait, "safe mode naming "+reason, func() bool {
		st := r.Status()
		return st.SafeMode.Active && strings.Contains(st.SafeMode.Reason, reason)
	})
	n := r.Status().Translations
	for range 10 {
		time.Sleep(tick)
		if st := r.Status(); st.Translations != n || !st.SafeMode.Active {
			t.Fatalf("translated while a mesh identity is missing: %+v", st)
		}
	}
}

func hasKind(s *snapshot.Snapshot, kind string) bool {
	for _, res := range s.Sorted() {
		if strings.HasPrefix(res.Key, kind+"/") {
			return true
		}
	}
	return false
}
