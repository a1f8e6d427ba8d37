package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
	"github.com/meshrelay/meshrelay/internal/translate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tick = 20 * time.Millisecond
	wait = 5 * time.Second
)

func parse(t *testing.T, docs ...string) []resource.Object {
	t.Helper()
	objs, errs := resource.Parse(t.Name(), []byte(strings.Join(docs, "---\n")))
	if len(errs) != 0 {
		t.Fatalf("parse: %v", errs)
	}
	return objs
}

func clusterDoc(name string, skipWarming bool) string {
	return fmt.Sprintf("apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: %s\nspec:\n  skipWarming: %v\n", name, skipWarming)
}

func clusters(t *testing.T, names ...string) []resource.Object {
	t.Helper()
	var docs []string
	for _, n := range names {
		docs = append(docs, clusterDoc(n, false))
	}
	return parse(t, docs...)
}

// input is an input snapshot holding one Service per name, in namespace shop.
func input(t *testing.T, version uint64, services ...string) *snapshot.Snapshot {
	t.Helper()
	var rs []snapshot.Resource
	for _, s := range services {
		for _, o := range parse(t, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: shop\nspec:\n  ports:\n  - name: http\n    port: 80\n", s)) {
			rs = append(rs, o.Resource())
		}
	}
	return snapshot.New(version, 0, rs)
}

// expect returns the output hash the real translator gives each cluster for config and
// inputs: the reconciler must publish exactly that, whatever the translation's format.
func expect(t *testing.T, config []resource.Object, inputs map[string]*snapshot.Snapshot) map[string]string {
	t.Helper()
	clusters := translate.Clusters(config)
	in := translate.Input{Config: config, Inputs: map[string]*snapshot.Snapshot{}}
	for c, s := range inputs {
		if _, ok := clusters[c]; ok && s != nil {
			in.Inputs[c] = s
		}
	}
	out := map[string]string{}
	for c, rs := range translate.Translate(in).Outputs {
		out[c] = snapshot.New(0, 0, rs).Hash
	}
	return out
}

// hashOf is the hash of a possibly missing output.
func hashOf(s *snapshot.Snapshot) string {
	if s == nil {
		return "<none>"
	}
	return s.Hash
}

// publishes reports whether r's outputs are exactly want.
func publishes(r *reconcile.Reconciler, want map[string]string) func() bool {
	return func() bool {
		for c, h := range want {
			if hashOf(r.Output(c)) != h {
				return false
			}
		}
		return true
	}
}

// run starts r until the test ends (or stop is called) and waits for it to return.
func run(t *testing.T, r *reconcile.Reconciler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	var stopped atomic.Bool
	stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start returned %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func newReconciler(t *testing.T, cfg reconcile.Config, store snapshot.Store) *reconcile.Reconciler {
	t.Helper()
	if cfg.Tick == 0 {
		cfg.Tick = tick
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return reconcile.New(cfg, store, translate.NewTranslator(), nil, log, prometheus.NewRegistry())
}

// start builds a reconciler on store with the clusters as directory configuration and runs it.
func start(t *testing.T, cfg reconcile.Config, store snapshot.Store, config []resource.Object) *reconcile.Reconciler {
	t.Helper()
	r := newReconciler(t, cfg, store)
	r.SetDirConfig(config)
	run(t, r)
	return r
}

func TestSafeModeHoldsUntilEveryClusterReported(t *testing.T) {
	config := clusters(t, "east", "west", "north")
	r := start(t, reconcile.Config{SafeMode: true}, memstore.New(), config)
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(ctx, "east", inputs["east"])

	missing := func(want ...string) func() bool {
		return func() bool {
			sm := r.Status().SafeMode
			return sm.Active && slices.Equal(sm.Missing, want)
		}
	}
	poll.Until(t, wait, "safe mode missing north and west", missing("north", "west"))
	noOutputs := func() {
		t.Helper()
		st := r.Status()
		if !st.Ready {
			t.Error("not ready while holding")
		}
		if st.Translations != 0 {
			t.Errorf("%d translations ran in safe mode", st.Translations)
		}
		for _, c := range []string{"east", "west", "north"} {
			if out := r.Output(c); out != nil {
				t.Errorf("cluster %s has output version %d in safe mode", c, out.Version)
			}
		}
		if !strings.Contains(st.SafeMode.Reason, "safe mode") {
			t.Errorf("reason %q", st.SafeMode.Reason)
		}
	}
	noOutputs()

	inputs["west"] = input(t, 1, "api")
	r.PutInput(ctx, "west", inputs["west"])
	poll.Until(t, wait, "safe mode missing only north", missing("north"))
	noOutputs()

	inputs["north"] = input(t, 1)
	r.PutInput(ctx, "north", inputs["north"])
	poll.Until(t, wait, "outputs of all clusters", publishes(r, expect(t, config, inputs)))
	if st := r.Status(); st.SafeMode.Active || len(st.SafeMode.Missing) != 0 {
		t.Errorf("safe mode still active: %+v", st.SafeMode)
	}
	for _, c := range []string{"east", "west", "north"} {
		if v := r.Output(c).Version; v != 1 {
			t.Errorf("cluster %s: first output has version %d", c, v)
		}
	}
}

func TestSafeModeSkipsSkipWarmingClusters(t *testing.T) {
	config := parse(t, clusterDoc("east", false), clusterDoc("west", false), clusterDoc("lazy", true))
	r := start(t, reconcile.Config{SafeMode: true}, memstore.New(), config)
	poll.Until(t, wait, "safe mode missing east and west only", func() bool {
		sm := r.Status().SafeMode
		return sm.Active && slices.Equal(sm.Missing, []string{"east", "west"})
	})
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web"), "west": input(t, 1)}
	r.PutInput(t.Context(), "east", inputs["east"])
	r.PutInput(t.Context(), "west", inputs["west"])
	poll.Until(t, wait, "outputs, also of the cluster that never reported", func() bool {
		return r.Output("lazy") != nil && publishes(r, expect(t, config, inputs))()
	})
	st := r.Status()
	if st.SafeMode.Active {
		t.Errorf("safe mode active: %+v", st.SafeMode)
	}
	for _, c := range st.Clusters {
		if c.Name == "lazy" && !c.SkipWarming {
			t.Error("status does not report skipWarming")
		}
	}
}

func TestWithoutSafeModeTranslatesAtOnce(t *testing.T) {
	config := clusters(t, "east", "west")
	r := start(t, reconcile.Config{SafeMode: false, SafeStartWindow: 0, Role: fixedRole{epoch: 7}}, memstore.New(), config)
	// Nobody reported; translation runs anyway.
	poll.Until(t, wait, "outputs without inputs", func() bool {
		return r.Output("east") != nil && r.Output("west") != nil && publishes(r, expect(t, config, nil))()
	})
	if st := r.Status(); st.SafeMode.Active || st.Translations == 0 {
		t.Errorf("status %+v", st)
	}
	if out := r.Output("west"); out.Version != 1 || out.Epoch != 7 {
		t.Errorf("west output version %d, epoch %d; want 1, 7", out.Version, out.Epoch)
	}
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(t.Context(), "east", inputs["east"])
	poll.Until(t, wait, "outputs for east's input", publishes(r, expect(t, config, inputs)))
}

func TestSafeStartWindow(t *testing.T) {
	const window = 300 * time.Millisecond
	config := clusters(t, "east", "west")
	t0 := time.Now()
	r := start(t, reconcile.Config{SafeMode: false, SafeStartWindow: window}, memstore.New(), config)
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(t.Context(), "east", inputs["east"])
	poll.Until(t, wait, "the window to hold translation", func() bool {
		sm := r.Status().SafeMode
		return sm.Active && slices.Equal(sm.Missing, []string{"west"})
	})
	if st := r.Status(); !strings.Contains(st.SafeMode.Reason, "window") || r.Output("east") != nil || r.Output("west") != nil || st.Translations != 0 {
		t.Errorf("while holding: reason %q, outputs %v %v, %d translations", st.SafeMode.Reason, r.Output("east"), r.Output("west"), st.Translations)
	}
	poll.Until(t, wait, "translation after the window", func() bool { return r.Output("west") != nil })
	if elapsed := time.Since(t0); elapsed < window {
		t.Errorf("translated after %s, before the %s window ended", elapsed, window)
	}
	poll.Until(t, wait, "outputs for the inputs present", publishes(r, expect(t, config, inputs)))
	if sm := r.Status().SafeMode; sm.Active {
		t.Errorf("still held after translating: %+v", sm)
	}
}

func TestSafeStartWindowEndsEarlyWhenAllReport(t *testing.T) {
	const window = time.Minute
	t0 := time.Now()
	r := start(t, reconcile.Config{SafeMode: false, SafeStartWindow: window}, memstore.New(), clusters(t, "east", "west"))
	r.PutInput(t.Context(), "east", input(t, 1, "web"))
	r.PutInput(t.Context(), "west", input(t, 1))
	poll.Until(t, wait, "translation once every input is present", func() bool { return r.Output("west") != nil })
	if elapsed := time.Since(t0); elapsed >= window {
		t.Errorf("waited %s for inputs that were all present", elapsed)
	}
}

// versions returns the current output version of every cluster.
func versions(r *reconcile.Reconciler, cs ...string) map[string]*snapshot.Snapshot {
	out := map[string]*snapshot.Snapshot{}
	for _, c := range cs {
		out[c] = r.Output(c)
	}
	return out
}

func TestOutputVersions(t *testing.T) {
	config := clusters(t, "east", "west")
	r := start(t, reconcile.Config{}, memstore.New(), config)
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(ctx, "east", inputs["east"])
	first := expect(t, config, inputs)
	poll.Until(t, wait, "outputs for east's first input", publishes(r, first))
	prev := versions(r, "east", "west")

	// Same content under a new input version: translation runs, outputs keep their version.
	inputs["east"] = input(t, 2, "web")
	before := r.Status().Translations // any later translation sees the new input
	r.PutInput(ctx, "east", inputs["east"])
	poll.Until(t, wait, "another translation", func() bool { return r.Status().Translations > before })
	for c, p := range prev {
		if got := r.Output(c); got.Version != p.Version || got.Hash != p.Hash {
			t.Errorf("unchanged content: %s version %d→%d", c, p.Version, got.Version)
		}
	}
	if got := r.Input("east"); got.Version != 2 {
		t.Errorf("input version %d, want 2", got.Version)
	}

	// Changed content: each output whose content changed goes up by exactly one, the others
	// keep their version.
	inputs["east"] = input(t, 3, "web", "db")
	second := expect(t, config, inputs)
	if second["east"] == first["east"] {
		t.Fatal("the translator gives east the same output for another service set; the test needs an input that changes it")
	}
	r.PutInput(ctx, "east", inputs["east"])
	poll.Until(t, wait, "outputs for east's second input", publishes(r, second))
	for c, p := range prev {
		want := p.Version
		if second[c] != first[c] {
			want++
		}
		if got := r.Output(c).Version; got != want {
			t.Errorf("%s: version %d after the change, want %d", c, got, want)
		}
	}

	// Back to the first content: a new version again, not the old one.
	inputs["east"] = input(t, 4, "web")
	r.PutInput(ctx, "east", inputs["east"])
	poll.Until(t, wait, "outputs for the first content again", publishes(r, first))
	if got := r.Output("east").Version; got != prev["east"].Version+2 {
		t.Errorf("reverted content: east version %d, want %d", got, prev["east"].Version+2)
	}
}

func TestSubscribe(t *testing.T) {
	config := clusters(t, "east", "west")
	r := start(t, reconcile.Config{}, memstore.New(), config)
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(ctx, "east", inputs["east"])
	first := expect(t, config, inputs)
	poll.Until(t, wait, "first outputs", publishes(r, first))

	ch, cancel := r.Subscribe("east")
	defer cancel()
	other, cancelOther := r.Subscribe("west")
	defer cancelOther()

	// Subscribers are notified after an output is written to the store, a moment after
	// Output shows it: one translation more (the loop runs one at a time) makes sure the
	// notification of the first outputs is behind us; drop it if it came after subscribing.
	sameInput := func(v uint64) {
		before := r.Status().Translations
		r.PutInput(ctx, "east", input(t, v, "web"))
		poll.Until(t, wait, "another translation", func() bool { return r.Status().Translations > before })
	}
	sameInput(2)
	for _, c := range []<-chan struct{}{ch, other} {
		select {
		case <-c:
		default:
		}
	}

	// No notification without a change.
	sameInput(3)
	select {
	case <-ch:
		t.Error("notified although east's output did not change")
	default:
	}

	inputs["east"] = input(t, 4, "web", "db")
	second := expect(t, config, inputs)
	r.PutInput(ctx, "east", inputs["east"])
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatal("no notification of east's output change")
	}
	if got := hashOf(r.Output("east")); got != second["east"] {
		t.Error("notified before the output changed")
	}
	select {
	case <-other:
		if second["west"] == first["west"] {
			t.Error("west's subscriber notified of a change of east's output only")
		}
	default:
		if second["west"] != first["west"] {
			t.Error("west's subscriber not notified of its change")
		}
	}

	// After cancel, no more notifications.
	cancel()
	inputs["east"] = input(t, 5, "web")
	r.PutInput(ctx, "east", inputs["east"])
	poll.Until(t, wait, "outputs for the first content again", publishes(r, first))
	select {
	case <-ch:
		t.Error("notified after cancel")
	default:
	}
}

func TestAdoptVersion(t *testing.T) {
	config := clusters(t, "east", "west")
	r := start(t, reconcile.Config{}, memstore.New(), config)
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(t.Context(), "east", inputs["east"])
	poll.Until(t, wait, "outputs", publishes(r, expect(t, config, inputs)))
	cur := r.Output("east")

	// An agent that holds other content under a higher version (it was served by another
	// replica): the current content is re-stamped above it, so its version never goes back.
	r.AdoptVersion("east", cur.Version+5, "0123456789abcdef")
	if got := r.Output("east"); got.Version != cur.Version+6 || got.Hash != cur.Hash {
		t.Errorf("other hash: version %d hash %s, want %d and unchanged content", got.Version, got.Hash, cur.Version+6)
	}
	r.AdoptVersion("nobody", 50, cur.Hash)
	if r.Output("nobody") != nil {
		t.Error("AdoptVersion created an output")
	}
	r.AdoptVersion("east", cur.Version+8, cur.Hash)
	if got := r.Output("east"); got.Version != cur.Version+8 || got.Hash != cur.Hash {
		t.Errorf("equal hash: version %d, want %d", got.Version, cur.Version+8)
	}
	r.AdoptVersion("east", cur.Version+2, cur.Hash)
	if got := r.Output("east").Version; got != cur.Version+8 {
		t.Errorf("lower version adopted: %d", got)
	}
	// The next change continues from the adopted version.
	inputs["east"] = input(t, 2, "web", "db")
	r.PutInput(t.Context(), "east", inputs["east"])
	poll.Until(t, wait, "east output change", publishes(r, expect(t, config, inputs)))
	if got := r.Output("east").Version; got != cur.Version+9 {
		t.Errorf("version after change %d, want %d", got, cur.Version+9)
	}
}

func TestApplyAndDeleteCluster(t *testing.T) {
	store := memstore.New()
	r := start(t, reconcile.Config{SafeMode: true}, store, clusters(t, "east"))
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web"), "west": input(t, 1, "api")}
	r.PutInput(ctx, "east", inputs["east"])
	poll.Until(t, wait, "east output", func() bool { return r.Output("east") != nil })
	if r.IsRegistered("west") {
		t.Fatal("west registered before Apply")
	}
	// An input of a cluster that is not registered yet is kept but not translated.
	r.PutInput(ctx, "west", inputs["west"])

	west := clusters(t, "west")
	if err := r.Apply(ctx, west); err != nil {
		t.Fatal(err)
	}
	if !r.IsRegistered("west") {
		t.Error("Apply did not register west")
	}
	rs, _, err := store.ListConfig(ctx)
	if err != nil || len(rs) != 1 || rs[0].Key != "KubernetesCluster//west" {
		t.Errorf("stored config %v %v", rs, err)
	}
	// Once warm, a newly registered cluster does not hold translation.
	poll.Until(t, wait, "outputs with west", publishes(r, expect(t, clusters(t, "east", "west"), inputs)))
	poll.Until(t, wait, "west output in the store", func() bool {
		s, err := store.Get(ctx, snapshot.Output, "west")
		return err == nil && s.Hash == hashOf(r.Output("west"))
	})

	if err := r.Delete(ctx, west[0].Key()); err != nil {
		t.Fatal(err)
	}
	if r.IsRegistered("west") {
		t.Error("west still registered after Delete")
	}
	poll.Until(t, wait, "west output removed", func() bool { return r.Output("west") == nil })
	poll.Until(t, wait, "west output removed from the store", func() bool {
		_, err := store.Get(ctx, snapshot.Output, "west")
		return errors.Is(err, snapshot.ErrNotFound)
	})
	for _, c := range r.Status().Clusters {
		if c.Name == "west" {
			t.Error("status lists the deleted cluster")
		}
	}
	if err := r.Delete(ctx, west[0].Key()); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	// A cluster of the config directory cannot be deleted through the API.
	if err := r.Delete(ctx, "KubernetesCluster//east"); !errors.Is(err, snapshot.ErrNotFound) || !r.IsRegistered("east") {
		t.Errorf("Delete of a directory cluster: %v, registered %v", err, r.IsRegistered("east"))
	}
}

// flakyStore fails every Put while fail is set, as an unreachable backend would.
type flakyStore struct {
	*memstore.Store
	fail atomic.Bool
}

func (f *flakyStore) Put(ctx context.Context, kind snapshot.Kind, cluster string, s *snapshot.Snapshot) error {
	if f.fail.Load() {
		return fmt.Errorf("put %s of %s: connection refused: %w", kind, cluster, snapshot.ErrUnavailable)
	}
	return f.Store.Put(ctx, kind, cluster, s)
}

// Delete fails like Put while fail is set.
func (f *flakyStore) Delete(ctx context.Context, kind snapshot.Kind, cluster string) error {
	if f.fail.Load() {
		return fmt.Errorf("delete %s of %s: connection refused: %w", kind, cluster, snapshot.ErrUnavailable)
	}
	return f.Store.Delete(ctx, kind, cluster)
}

// Write fails each item like Put and Delete while fail is set (memstore's own Write would
// call its own Put).
func (f *flakyStore) Write(ctx context.Context, batch []snapshot.Write) []error {
	return snapshot.WriteEach(ctx, f, batch)
}

func TestStoreUnavailable(t *testing.T) {
	store := &flakyStore{Store: memstore.New()}
	store.fail.Store(true)
	config := clusters(t, "east", "west")
	r := start(t, reconcile.Config{SafeMode: true}, store, config)
	ctx := t.Context()
	eastIn, westIn := input(t, 1, "web"), input(t, 1, "api")
	r.PutInput(ctx, "east", eastIn)
	r.PutInput(ctx, "west", westIn)
	if r.Input("east") != eastIn || r.Input("west") != westIn {
		t.Fatal("PutInput did not update memory while the store fails")
	}
	// Safe mode counts inputs held in memory; translation and publishing go on.
	poll.Until(t, wait, "outputs while the store fails", func() bool {
		return r.Output("east") != nil && r.Output("west") != nil &&
			publishes(r, expect(t, config, map[string]*snapshot.Snapshot{"east": eastIn, "west": westIn}))()
	})
	poll.Until(t, wait, "store error in status", func() bool {
		return strings.Contains(r.Status().StoreError, snapshot.ErrUnavailable.Error())
	})
	if _, err := store.Store.Get(ctx, snapshot.Input, "east"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("input reached the failing store: %v", err)
	}
	if st := r.Status(); !st.Ready {
		t.Error("not ready while the store fails after loading")
	}

	store.fail.Store(false)
	stored := func(kind snapshot.Kind, cluster, hash string) bool {
		s, err := store.Store.Get(ctx, kind, cluster)
		return err == nil && s.Hash == hash
	}
	poll.Until(t, wait, "store to catch up", func() bool {
		return stored(snapshot.Input, "east", eastIn.Hash) && stored(snapshot.Input, "west", westIn.Hash) &&
			stored(snapshot.Output, "east", r.Output("east").Hash) && stored(snapshot.Output, "west", r.Output("west").Hash)
	})
	poll.Until(t, wait, "store error cleared", func() bool { return r.Status().StoreError == "" })
}

func TestRestartResumesVersions(t *testing.T) {
	store := memstore.New()
	config := clusters(t, "east", "west")
	r1 := newReconciler(t, reconcile.Config{SafeMode: true, Role: fixedRole{epoch: 1}}, store)
	r1.SetDirConfig(config)
	stop1 := run(t, r1)
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web"), "west": input(t, 1)}
	r1.PutInput(ctx, "east", inputs["east"])
	r1.PutInput(ctx, "west", inputs["west"])
	poll.Until(t, wait, "first output", publishes(r1, expect(t, config, inputs)))
	inputs["east"] = input(t, 2, "web", "db")
	r1.PutInput(ctx, "east", inputs["east"])
	poll.Until(t, wait, "second output", publishes(r1, expect(t, config, inputs)))
	want := r1.Output("east")
	if want.Version != 2 {
		t.Fatalf("east output version %d, want 2 (the test needs an input change that changes east's output)", want.Version)
	}
	poll.Until(t, wait, "output in the store", func() bool {
		s, err := store.Get(ctx, snapshot.Output, "east")
		return err == nil && s.Hash == want.Hash
	})
	stop1()

	// Same epoch and inputs: the stored output is current, its version is kept.
	r2 := newReconciler(t, reconcile.Config{SafeMode: true, Role: fixedRole{epoch: 1}}, store)
	r2.SetDirConfig(config)
	stop2 := run(t, r2)
	poll.Until(t, wait, "a translation after restart", func() bool { return r2.Status().Translations > 0 })
	if got := r2.Output("east"); got == nil || got.Version != want.Version || got.Hash != want.Hash {
		t.Errorf("after restart east output %+v, want version %d", got, want.Version)
	}
	stop2()

	// A new epoch: same content, next version, new epoch stamped.
	r3 := newReconciler(t, reconcile.Config{SafeMode: true, Role: fixedRole{epoch: 2}}, store)
	r3.SetDirConfig(config)
	run(t, r3)
	poll.Until(t, wait, "output of the new epoch", func() bool {
		out := r3.Output("east")
		return out != nil && out.Epoch == 2
	})
	if got := r3.Output("east"); got.Version != want.Version+1 || got.Hash != want.Hash {
		t.Errorf("new epoch: version %d hash %s, want %d %s", got.Version, got.Hash, want.Version+1, want.Hash)
	}
}

// A cluster deleted and registered again while the store is down must end up with its
// output in the store once the store is back.
func TestClusterReAddedDuringStoreOutage(t *testing.T) {
	store := &flakyStore{Store: memstore.New()}
	r := start(t, reconcile.Config{}, store, clusters(t, "east"))
	ctx := t.Context()
	west := clusters(t, "west")
	if err := r.Apply(ctx, west); err != nil {
		t.Fatal(err)
	}
	r.PutInput(ctx, "east", input(t, 1, "web"))
	poll.Until(t, wait, "west output in the store", func() bool {
		s, err := store.Store.Get(ctx, snapshot.Output, "west")
		return err == nil && s.Hash == hashOf(r.Output("west"))
	})

	store.fail.Store(true)
	if err := r.Delete(ctx, west[0].Key()); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, wait, "west output removed", func() bool { return r.Output("west") == nil })
	if err := r.Apply(ctx, west); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, wait, "west output again", func() bool { return r.Output("west") != nil })
	store.fail.Store(false)
	poll.Until(t, wait, "store to catch up", func() bool { return r.Status().StoreError == "" })
	want := r.Output("west")
	poll.Until(t, wait, "west output in the store after the outage", func() bool {
		s, err := store.Store.Get(ctx, snapshot.Output, "west")
		return err == nil && s.Hash == want.Hash && s.Version == want.Version
	})
}

// fixedRole is an active leader owning every cluster, at a fixed epoch.
type fixedRole struct{ epoch uint64 }

func (f fixedRole) Active() (bool, uint64) { return true, f.epoch }
func (f fixedRole) Leader() bool           { return true }
func (f fixedRole) Owns(string) bool       { return true }
