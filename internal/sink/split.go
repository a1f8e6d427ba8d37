package sink

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Split sends Envoy resources to the xDS server only and everything else
// (Kubernetes-shaped Istio resources) to the output directory and, in Kubernetes mode, to
// the cluster: Envoy secrets hold private keys and are not Kubernetes objects.
//
// A Kubernetes sink error other than a deletion-guard refusal (an API server failure, or
// objects the cluster refused) does not hold back the xDS resources; a deletion-guard
// refusal does, so that an output suspected of being partial deletes nothing on either side.
// The error is returned either way. The agent refuses (NACKs) the output, unless the error is
// exactly a *RefusedError (applied but for some objects: the agent ACKs with them) or the
// agent re-applies its saved output at start (Restoring): a deletion-guard refusal then is
// logged and the agent starts with the cluster as it is, instead of failing to start; the
// server's next output is judged against it.
type Split struct {
	Files Sink // the output directory (a *Dir); nil without one
	Kube  Sink // the cluster (a *Kube); nil outside Kubernetes mode
	XDS   Sink // the xDS server; nil without one
	Log   *slog.Logger

	restoring atomic.Bool // the next Apply re-applies the saved output
}

var _ Sink = (*Split)(nil)

// Restoring says that the next Apply re-applies the agent's saved output.
func (s *Split) Restoring() { s.restoring.Store(true) }

// Apply applies snap's Kubernetes-shaped resources to Files then Kube, then all of snap to
// XDS, as the type's documentation says.
func (s *Split) Apply(ctx context.Context, snap *snapshot.Snapshot) error {
	restoring := s.restoring.Swap(false)
	kube := make(map[string]snapshot.Resource, len(snap.Resources))
	for k, r := range snap.Resources {
		if !envoyres.IsKey(k) {
			kube[k] = r
		}
	}
	nonEnvoy := snapshot.FromMap(snap.Version, snap.Epoch, kube)
	if s.Files != nil {
		if err := s.Files.Apply(ctx, nonEnvoy); err != nil {
			return err
		}
	}
	var kubeErr error
	if s.Kube != nil {
		kubeErr = s.Kube.Apply(ctx, nonEnvoy)
		switch {
		case errors.Is(kubeErr, ErrDeletionGuard) && restoring:
			s.Log.Warn("deletion guard holds back the saved output; starting with the cluster as it is", "version", snap.Version, "error", kubeErr)
			kubeErr = nil
		case errors.Is(kubeErr, ErrDeletionGuard):
			return kubeErr
		}
	}
	if s.XDS != nil {
		if err := s.XDS.Apply(ctx, snap); err != nil {
			return errors.Join(kubeErr, err)
		}
	}
	return kubeErr
}
