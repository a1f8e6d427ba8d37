package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	stdmaps "maps"
	"slices"
	"testing"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// recorder is a Sink that records the keys it was given and fails with err. Split's policy
// is over the errors its sinks return; the real Kubernetes sink's deletion guard is tested
// against a real API server in kube_apiserver_test.go.
type recorder struct {
	keys [][]string
	err  error
}

func (r *recorder) Apply(_ context.Context, s *snapshot.Snapshot) error {
	r.keys = append(r.keys, slices.Sorted(stdmaps.Keys(s.Resources)))
	return r.err
}

// mixed is a snapshot of the test manifests and one Envoy cluster.
func mixed(t *testing.T) *snapshot.Snapshot {
	t.Helper()
	s := snap(t, 7, manifests)
	rs := slices.Collect(stdmaps.Values(s.Resources))
	rs = append(rs, snapshot.Resource{Key: envoyres.Key(envoyres.KindCluster, "c1"), Body: []byte(`{}`)})
	return snapshot.New(7, 1, rs)
}

func TestSplitRoutesEnvoyToXDSOnly(t *testing.T) {
	s := mixed(t)
	dir := NewDir(t.TempDir(), nil)
	kube, xds := &recorder{}, &recorder{}
	split := &Split{Files: dir, Kube: kube, XDS: xds, Log: slog.New(slog.DiscardHandler)}
	if err := split.Apply(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	all := slices.Sorted(stdmaps.Keys(s.Resources))
	nonEnvoy := slices.DeleteFunc(slices.Clone(all), envoyres.IsKey)
	if len(nonEnvoy) == 0 || len(nonEnvoy) == len(all) {
		t.Fatalf("the test snapshot must mix Envoy and other resources: %q", all)
	}
	if len(kube.keys) != 1 || !slices.Equal(kube.keys[0], nonEnvoy) {
		t.Errorf("kube got %q, want only the non-Envoy resources %q", kube.keys, nonEnvoy)
	}
	if len(xds.keys) != 1 || !slices.Equal(xds.keys[0], all) {
		t.Errorf("xds got %q, want the whole snapshot %q", xds.keys, all)
	}
	if fs := files(t, dir); len(fs) != len(nonEnvoy) {
		t.Errorf("output directory holds %q, want one file per non-Envoy resource %q", fs, nonEnvoy)
	}
}

func TestSplitKubeErrors(t *testing.T) {
	guard := fmt.Errorf("apply: %w", ErrDeletionGuard)
	apiDown := errors.New("api server unavailable")
	xdsErr := errors.New("xds refused")
	for _, tc := range []struct {
		name      string
		kubeErr   error
		xdsErr    error
		restoring bool
		want      []error // errors.Is each; nil means Apply succeeds
		xdsCalled bool
	}{
		{name: "deletion guard holds back xds", kubeErr: guard, want: []error{ErrDeletionGuard}},
		{name: "deletion guard while restoring starts as the cluster is", kubeErr: guard, restoring: true, xdsCalled: true},
		{name: "other kube error still applies xds", kubeErr: apiDown, want: []error{apiDown}, xdsCalled: true},
		{name: "kube and xds errors are joined", kubeErr: apiDown, xdsErr: xdsErr, want: []error{apiDown, xdsErr}, xdsCalled: true},
		{name: "restoring without a kube error", restoring: true, xdsCalled: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kube, xds := &recorder{err: tc.kubeErr}, &recorder{err: tc.xdsErr}
			split := &Split{Kube: kube, XDS: xds, Log: slog.New(slog.DiscardHandler)}
			if tc.restoring {
				split.Restoring()
			}
			err := split.Apply(t.Context(), mixed(t))
			if tc.want == nil && err != nil {
				t.Fatalf("Apply = %v, want nil", err)
			}
			if tc.want != nil && err == nil {
				t.Fatalf("Apply = nil, want %v", tc.want)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("Apply = %v, want it to wrap %v", err, w)
				}
			}
			if called := len(xds.keys) > 0; called != tc.xdsCalled {
				t.Errorf("xds applied: %v, want %v", called, tc.xdsCalled)
			}
		})
	}
}

// Only the first Apply after Restoring forgives a deletion-guard refusal.
func TestSplitRestoringOnlyOnce(t *testing.T) {
	kube := &recorder{err: ErrDeletionGuard}
	split := &Split{Kube: kube, XDS: &recorder{}, Log: slog.New(slog.DiscardHandler)}
	split.Restoring()
	if err := split.Apply(t.Context(), mixed(t)); err != nil {
		t.Fatalf("restoring Apply = %v, want nil", err)
	}
	if err := split.Apply(t.Context(), mixed(t)); !errors.Is(err, ErrDeletionGuard) {
		t.Fatalf("next Apply = %v, want the deletion guard's refusal", err)
	}
}
