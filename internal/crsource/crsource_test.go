package crsource_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	apiv1alpha1 "github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/crsource"
	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
	"github.com/meshrelay/meshrelay/internal/translate"
	"github.com/meshrelay/meshrelay/internal/translate/translatetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go's process-wide background goroutines, started once per process.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
		goleak.IgnoreAnyFunction("k8s.io/apimachinery/pkg/util/wait.BackoffUntil"),
		// Idle keep-alive connections of the shared HTTP transports.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

const seed003 = "../translate/testdata/seed003"

// load reads the manifests of a translate test case's config directory.
func load(t *testing.T, dir string) []resource.Object {
	t.Helper()
	objs, errs := resource.LoadPath(dir)
	if len(errs) > 0 {
		t.Fatalf("load %s: %v", dir, errs)
	}
	return objs
}

// toCR converts a resource to its custom resource.
func toCR(t *testing.T, o resource.Object) kubev1alpha1.Object {
	t.Helper()
	var v any
	switch o.Kind {
	case apiv1alpha1.KindKubernetesCluster:
		v = &apiv1alpha1.KubernetesCluster{}
	case apiv1alpha1.KindUpstream:
		v = &apiv1alpha1.Upstream{}
	case apiv1alpha1.KindFailoverScheme:
		v = &apiv1alpha1.FailoverScheme{}
	case apiv1alpha1.KindGateway:
		v = &apiv1alpha1.Gateway{}
	case apiv1alpha1.KindRouteTable:
		v = &apiv1alpha1.RouteTable{}
	case apiv1alpha1.KindVirtualDestination:
		v = &apiv1alpha1.VirtualDestination{}
	case apiv1alpha1.KindFailoverPolicy:
		v = &apiv1alpha1.FailoverPolicy{}
	case apiv1alpha1.KindOutlierDetectionPolicy:
		v = &apiv1alpha1.OutlierDetectionPolicy{}
	default:
		t.Fatalf("%s is not a custom resource kind", o)
	}
	if err := o.Into(v); err != nil {
		t.Fatalf("decode %s: %v", o, err)
	}
	cr, err := kubev1alpha1.FromObject(v)
	if err != nil {
		t.Fatalf("convert %s: %v", o, err)
	}
	return cr
}

// crFromYAML parses a custom resource written as YAML, without meshrelay's validation.
func crFromYAML(t *testing.T, y string) kubev1alpha1.Object {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(y), &tm); err != nil {
		t.Fatal(err)
	}
	cr, err := kubev1alpha1.New(tm.Kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict([]byte(y), cr); err != nil {
		t.Fatalf("parse %q: %v", y, err)
	}
	return cr
}

// create creates custom resources (and their namespaces) in the API server.
func create(t *testing.T, c client.Client, crs ...kubev1alpha1.Object) {
	t.Helper()
	for _, cr := range crs {
		if ns := cr.GetNamespace(); ns != "" {
			err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("create namespace %s: %v", ns, err)
			}
		}
		if err := c.Create(t.Context(), cr); err != nil {
			t.Fatalf("create %s %s/%s: %v", cr.GetObjectKind().GroupVersionKind().Kind, cr.GetNamespace(), cr.GetName(), err)
		}
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// server is a Kubernetes-mode management server core: the CR source and status writer
// feeding a real reconciler, as internal/app/server wires them.
type server struct {
	src     *crsource.Source
	status  *crsource.Status
	rec     *reconcile.Reconciler
	patches atomic.Int64 // status writes
	cancel  context.CancelFunc
	done    chan struct{}
	errs    chan error
}

func startServer(t *testing.T, env *kubetest.Env) *server {
	t.Helper()
	log := testLogger(t)
	src, err := crsource.New(env.Config, log.With("component", "crsource"), crsource.WithDebounce(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s := &server{src: src, done: make(chan struct{}), errs: make(chan error, 3)}
	base, err := client.NewWithWatch(env.Config, client.Options{Scheme: src.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	c := interceptor.NewClient(base, interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			s.patches.Add(1)
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
	})
	s.status = crsource.NewStatus(src, c, nil, log.With("component", "crstatus"))
	s.rec = reconcile.New(reconcile.Config{SafeMode: true, WaitForConfigDir: true, OnTranslate: s.status.Translated, Tick: 50 * time.Millisecond},
		memstore.New(), translate.NewTranslator(), func(cs []string) map[string]translate.ClusterCert { return translatetest.Certs(cs...) }, log.With("component", "reconcile"), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	var wg sync.WaitGroup
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				s.errs <- err
			}
		}()
	}
	run(func() error { return s.rec.Start(ctx) })
	run(func() error { return src.Start(ctx, s.rec.SetDirConfig) })
	run(func() error { return s.status.Start(ctx) })
	go func() { wg.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	return s
}

func (s *server) stop() {
	s.cancel()
	<-s.done
}

func (s *server) checkErrs(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.errs:
		t.Fatalf("component failed: %v", err)
	default:
	}
}

// dump renders outputs and problems as internal/translate's golden test does.
func dump(t *testing.T, outputs map[string]*snapshot.Snapshot, status map[string][]string) []byte {
	t.Helper()
	sorted := make(map[string][]snapshot.Resource, len(outputs))
	for c, o := range outputs {
		sorted[c] = o.Sorted()
	}
	b, err := translatetest.Dump(sorted, status, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func putInputs(t *testing.T, rec *reconcile.Reconciler, dir string) {
	t.Helper()
	inputs, errs := resource.LoadInputsDir(dir)
	if len(errs) > 0 {
		t.Fatalf("inputs: %v", errs)
	}
	for c, in := range inputs {
		rec.PutInput(t.Context(), c, in)
	}
}

// normalized is a resource's JSON with the apiVersion every custom resource converts to.
func normalized(t *testing.T, o resource.Object) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(o.Raw, &m); err != nil {
		t.Fatal(err)
	}
	m["apiVersion"] = apiv1alpha1.APIVersion
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSeed003FromCustomResources applies seed 003's resources to a real API server as custom
// resources: the reconciler gets the objects the YAML files give, and translates them into
// exactly the golden outputs of internal/translate.
func TestSeed003FromCustomResources(t *testing.T) {
	env := kubetest.Start(t)
	files := load(t, filepath.Join(seed003, "config"))
	for _, o := range files {
		create(t, env.Client, toCR(t, o))
	}
	s := startServer(t, env)
	putInputs(t, s.rec, filepath.Join(seed003, "inputs"))

	poll.Eventually(t, 30*time.Second, "configuration from the custom resources", func() error {
		s.checkErrs(t)
		got := s.rec.Config()
		if len(got) != len(files) {
			return fmt.Errorf("%d resources, want %d", len(got), len(files))
		}
		return nil
	})
	got := s.rec.Config()
	for i, o := range files {
		if got[i].Key() != o.Key() {
			t.Fatalf("resource %d is %s, want %s", i, got[i].Key(), o.Key())
		}
		if g, w := normalized(t, got[i]), normalized(t, o); g != w {
			t.Errorf("%s from the custom resource differs from the file's:\n got: %s\nwant: %s", o, g, w)
		}
	}

	want, err := os.ReadFile(filepath.Join("..", "translate", "testdata", "seed003.golden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 30*time.Second, "translated outputs equal to the golden file", func() error {
		s.checkErrs(t)
		outs := map[string]*snapshot.Snapshot{}
		for _, c := range []string{"local", "remote"} {
			out := s.rec.Output(c)
			if out == nil {
				return fmt.Errorf("no output for cluster %s yet", c)
			}
			outs[c] = out
		}
		if got := dump(t, outs, s.rec.ResourceStatus()); !bytes.Equal(got, want) {
			return fmt.Errorf("outputs differ from seed003.golden.yaml:\n%s", translatetest.FirstDiff(string(want), string(got)))
		}
		return nil
	})
}

// badScheme passes the CRD's schema but not meshrelay's validation: its failover target is
// its primary.
const badScheme = `
apiVersion: meshrelay.io/v1alpha1
kind: FailoverScheme
metadata: {name: loop, namespace: gloo-fed}
spec:
  primary: {clusterName: local, name: default-service-blue-10000, namespace: gloo-system}
  failoverGroups:
  - priorityGroup:
    - cluster: local
      upstreams: [{name: default-service-blue-10000, namespace: gloo-system}]
`

// ghostRoute is valid but routes to an upstream that does not exist: the translation reports
// it in the RouteTable's status and translates the rest.
const ghostRoute = `
apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata: {name: ghost, namespace: gloo-system}
spec:
  hosts: [ghost.example.com]
  clusters: [local]
  http:
  - matchers: [{uri: {prefix: /}}]
    forwardTo:
      destinations:
      - ref: {name: no-such-upstream, namespace: gloo-system}
`

// twoMatchers is translated with a note (only its first matcher is used): accepted, and the
// note is in the condition's message.
const twoMatchers = `
apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata: {name: two-matchers, namespace: gloo-system}
spec:
  hosts: [two.example.com]
  clusters: [local]
  http:
  - matchers: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]
    forwardTo:
      destinations:
      - ref: {name: default-service-blue-10000}
`

func getCR(t *testing.T, c client.Client, kind, namespace, name string) kubev1alpha1.Object {
	t.Helper()
	cr, err := kubev1alpha1.New(kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: namespace, Name: name}, cr); err != nil {
		t.Fatalf("get %s %s/%s: %v", kind, namespace, name, err)
	}
	return cr
}

func accepted(cr kubev1alpha1.Object) *metav1.Condition {
	return meta.FindStatusCondition(cr.GetStatus().Conditions, kubev1alpha1.ConditionAccepted)
}

// failsOverToGreen reports whether an output's cluster for blue fails over to green.
func failsOverToGreen(out *snapshot.Snapshot) bool {
	if out == nil {
		return false
	}
	for _, r := range out.Sorted() {
		if r.Key == "EnvoyClusterLoadAssignment//default-service-blue-10000" {
			human, err := envoyres.JSON(r)
			return err == nil && strings.Contains(string(human), "default-service-green-10000")
		}
	}
	return false
}

type crRef struct{ kind, namespace, name string }

// TestStatus checks the status written back: a bad custom resource gets Accepted=False
// naming the field while every other resource is still translated; a translation problem
// is reported on its resource; a status is written once, not rewritten while nothing
// changes, and rewritten (only that one) when a spec changes.
func TestStatus(t *testing.T) {
	env := kubetest.Start(t)
	var crs []kubev1alpha1.Object
	for _, o := range load(t, filepath.Join(seed003, "config")) {
		crs = append(crs, toCR(t, o))
	}
	crs = append(crs, crFromYAML(t, badScheme), crFromYAML(t, ghostRoute), crFromYAML(t, twoMatchers))
	create(t, env.Client, crs...)
	s := startServer(t, env)
	putInputs(t, s.rec, filepath.Join(seed003, "inputs"))

	refs := []crRef{
		{apiv1alpha1.KindKubernetesCluster, "", "local"},
		{apiv1alpha1.KindKubernetesCluster, "", "remote"},
		{apiv1alpha1.KindFailoverScheme, "gloo-fed", "failover-scheme"},
		{apiv1alpha1.KindFailoverScheme, "gloo-fed", "loop"},
		{apiv1alpha1.KindRouteTable, "gloo-system", "ghost"},
		{apiv1alpha1.KindRouteTable, "gloo-system", "two-matchers"},
	}
	poll.Eventually(t, 30*time.Second, "every status written", func() error {
		s.checkErrs(t)
		for _, r := range refs {
			cr := getCR(t, env.Client, r.kind, r.namespace, r.name)
			if c := accepted(cr); c == nil || c.ObservedGeneration != cr.GetGeneration() {
				return fmt.Errorf("%s %s/%s: no Accepted condition for generation %d yet: %+v", r.kind, r.namespace, r.name, cr.GetGeneration(), cr.GetStatus())
			}
		}
		return nil
	})

	// The bad one names the field and why, and is left out.
	loop := getCR(t, env.Client, apiv1alpha1.KindFailoverScheme, "gloo-fed", "loop")
	c := accepted(loop)
	if c.Status != metav1.ConditionFalse || c.Reason != kubev1alpha1.ReasonInvalid ||
		!strings.Contains(c.Message, "spec.failoverGroups[0].priorityGroup[0].upstreams[0]: is the primary") {
		t.Errorf("bad FailoverScheme: Accepted = %+v, want False/Invalid naming spec.failoverGroups[0].priorityGroup[0].upstreams[0]", c)
	}
	if loop.GetStatus().ObservedGeneration != loop.GetGeneration() {
		t.Errorf("bad FailoverScheme: observedGeneration %d, want %d", loop.GetStatus().ObservedGeneration, loop.GetGeneration())
	}
	for _, o := range s.rec.Config() {
		if o.Name == "loop" {
			t.Errorf("the invalid FailoverScheme reached the configuration")
		}
	}
	if errs := s.src.Errors(); len(errs) != 1 || !strings.Contains(errs[0], `FailoverScheme "gloo-fed/loop"`) {
		t.Errorf("Errors() = %q, want the invalid FailoverScheme", errs)
	}

	// The good ones are accepted, with the clusters they select.
	fs := getCR(t, env.Client, apiv1alpha1.KindFailoverScheme, "gloo-fed", "failover-scheme")
	if c := accepted(fs); c.Status != metav1.ConditionTrue || c.Reason != kubev1alpha1.ReasonAccepted {
		t.Errorf("seed FailoverScheme: Accepted = %+v, want True", c)
	}
	if got := fs.GetStatus().SelectedClusters; strings.Join(got, ",") != "local,remote" {
		t.Errorf("seed FailoverScheme selects %v, want [local remote]", got)
	}
	if got := getCR(t, env.Client, apiv1alpha1.KindKubernetesCluster, "", "remote").GetStatus().SelectedClusters; strings.Join(got, ",") != "remote" {
		t.Errorf("KubernetesCluster remote selects %v, want [remote]", got)
	}
	// The translation problem is reported on its resource, naming the field.
	ghost := getCR(t, env.Client, apiv1alpha1.KindRouteTable, "gloo-system", "ghost")
	if c := accepted(ghost); c.Status != metav1.ConditionFalse || c.Reason != crsource.ReasonTranslationProblems ||
		!strings.Contains(c.Message, "spec.http[0].forwardTo.destinations[0]") {
		t.Errorf("RouteTable with a missing destination: Accepted = %+v, want False/%s naming spec.http[0].forwardTo.destinations[0]", c, crsource.ReasonTranslationProblems)
	}
	// A note alone (a part that is ignored) leaves the resource accepted, and says so.
	two := getCR(t, env.Client, apiv1alpha1.KindRouteTable, "gloo-system", "two-matchers")
	if c := accepted(two); c.Status != metav1.ConditionTrue || c.Reason != kubev1alpha1.ReasonAccepted ||
		!strings.Contains(c.Message, "note: spec.http[0].matchers: only the first matcher is used") {
		t.Errorf("RouteTable with two matchers: Accepted = %+v, want True with the note", c)
	}
	// ...and the rest is translated all the same: the failover of seed 003 is in local's output.
	if !failsOverToGreen(s.rec.Output("local")) {
		t.Errorf("local's output lacks the seed's failover to default-service-green-10000")
	}

	// Written once: more translations and reads change nothing.
	rvs := map[crRef]string{}
	for _, r := range refs {
		rvs[r] = getCR(t, env.Client, r.kind, r.namespace, r.name).GetResourceVersion()
	}
	before := s.patches.Load()
	if before != int64(len(refs)) {
		t.Errorf("%d status writes for %d resources, want one each", before, len(refs))
	}
	for range 5 {
		s.rec.Kick()
		putInputs(t, s.rec, filepath.Join(seed003, "inputs"))
		time.Sleep(200 * time.Millisecond)
	}
	s.checkErrs(t)
	if n := s.patches.Load() - before; n != 0 {
		t.Errorf("%d status writes while nothing changed, want 0", n)
	}
	for _, r := range refs {
		if rv := getCR(t, env.Client, r.kind, r.namespace, r.name).GetResourceVersion(); rv != rvs[r] {
			t.Errorf("%v: resourceVersion %s, was %s: rewritten while nothing changed", r, rv, rvs[r])
		}
	}

	// Fixing the bad one: its status follows its new generation; nothing else is written.
	loop = getCR(t, env.Client, apiv1alpha1.KindFailoverScheme, "gloo-fed", "loop")
	fixed := loop.(*kubev1alpha1.FailoverScheme)
	fixed.Spec.FailoverGroups[0].PriorityGroup[0].Cluster = "remote"
	fixed.Spec.FailoverGroups[0].PriorityGroup[0].Upstreams[0].Name = "default-service-green-10000"
	if err := env.Client.Update(t.Context(), fixed); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 30*time.Second, "status of the fixed FailoverScheme", func() error {
		cr := getCR(t, env.Client, apiv1alpha1.KindFailoverScheme, "gloo-fed", "loop")
		if c := accepted(cr); c == nil || c.Reason == kubev1alpha1.ReasonInvalid || c.ObservedGeneration != cr.GetGeneration() ||
			cr.GetStatus().ObservedGeneration != 2 {
			return fmt.Errorf("status %+v, generation %d", cr.GetStatus(), cr.GetGeneration())
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	if n := s.patches.Load() - before; n != 1 {
		t.Errorf("%d status writes after fixing one resource, want 1", n)
	}
	for _, r := range refs {
		if r.name == "loop" {
			continue
		}
		if rv := getCR(t, env.Client, r.kind, r.namespace, r.name).GetResourceVersion(); rv != rvs[r] {
			t.Errorf("%v: rewritten when another resource changed", r)
		}
	}
}

// TestNoCRDs: a management cluster without meshrelay's CRDs fails Start at once, clearly.
func TestNoCRDs(t *testing.T) {
	env := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	src, err := crsource.New(env.Config, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = src.Start(ctx, func([]resource.Object) { t.Error("emitted without CRDs") })
	if !errors.Is(err, crsource.ErrCRDsMissing) {
		t.Fatalf("Start = %v, want ErrCRDsMissing", err)
	}
}

// TestFollowerWritesNothing: a server that is not the leader writes no status.
func TestFollowerWritesNothing(t *testing.T) {
	env := kubetest.Start(t)
	create(t, env.Client, crFromYAML(t, badScheme))
	log := testLogger(t)
	src, err := crsource.New(env.Config, log, crsource.WithDebounce(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.Config, client.Options{Scheme: src.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	var leader atomic.Bool
	st := crsource.NewStatus(src, c, leader.Load, log)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	emitted := make(chan struct{}, 10)
	wg.Add(2)
	go func() { defer wg.Done(); _ = src.Start(ctx, func([]resource.Object) { emitted <- struct{}{} }) }()
	go func() { defer wg.Done(); _ = st.Start(ctx) }()
	select {
	case <-emitted:
	case <-time.After(30 * time.Second):
		t.Fatal("no configuration emitted")
	}
	time.Sleep(500 * time.Millisecond)
	if cr := getCR(t, env.Client, apiv1alpha1.KindFailoverScheme, "gloo-fed", "loop"); accepted(cr) != nil {
		t.Fatalf("a follower wrote status: %+v", cr.GetStatus())
	}
	leader.Store(true)
	st.Kick()
	poll.Eventually(t, 10*time.Second, "status once leader", func() error {
		if accepted(getCR(t, env.Client, apiv1alpha1.KindFailoverScheme, "gloo-fed", "loop")) == nil {
			return fmt.Errorf("no status yet")
		}
		return nil
	})
}

func TestFieldMessages(t *testing.T) {
	err := errors.Join(
		&resource.FieldError{Resource: `Upstream "a/b"`, Field: "spec.port", Reason: "must be 1-65535"},
		fmt.Errorf("wrapped: %w", &resource.FieldError{Field: "spec.cluster", Reason: "unknown"}),
		errors.New("plain"),
	)
	if got, want := crsource.FieldMessages(err), "spec.port: must be 1-65535; spec.cluster: unknown; plain"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSelectedClusters(t *testing.T) {
	reg := []string{"local", "remote", "third"}
	for _, tc := range []struct {
		y    string
		want string
	}{
		{"apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata: {name: local}\n", "local"},
		{badScheme, "local"},
		{ghostRoute, "local"},
		{"apiVersion: meshrelay.io/v1alpha1\nkind: VirtualDestination\nmetadata: {name: v, namespace: d}\nspec: {hosts: [v.global], ports: [{number: 80}], services: [{name: v}]}\n", "local,remote,third"},
		{"apiVersion: meshrelay.io/v1alpha1\nkind: VirtualDestination\nmetadata: {name: v, namespace: d}\nspec: {hosts: [v.global], ports: [{number: 80}], services: [{name: v, cluster: remote}, {name: v, cluster: gone}]}\n", "remote"},
	} {
		var generic map[string]any
		if err := yaml.Unmarshal([]byte(tc.y), &generic); err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(generic)
		var h struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(js, &h)
		o := resource.Object{Kind: h.Kind, Name: h.Metadata.Name, Raw: js}
		if got := strings.Join(crsource.SelectedClusters(o, reg), ","); got != tc.want {
			t.Errorf("%s: selects %q, want %q", tc.y, got, tc.want)
		}
	}
}
