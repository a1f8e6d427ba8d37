package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// sharedCerts keeps the mesh identities every replica uses. With a shared store the
// leader of the active management server issues them and stores them; every replica reads
// them from the store, so all replicas translate with the same bytes.
type sharedCerts struct {
	issuer *pki.MeshIssuer
	store  *redisstore.Certs // nil: single server, the issuer is used directly
	coord  *ha.Coordinator
	rec    *reconcile.Reconciler
	log    *slog.Logger

	mu    sync.RWMutex // guards certs
	certs map[string]translate.ClusterCert
}

// source is the reconciler's CertSource. With a shared store it gives only what the store
// holds: the reconciler holds translation until every registered cluster's identity is
// there (a server restarted on an emptied store waits for the leader to issue them again).
func (s *sharedCerts) source(clusters []string) map[string]translate.ClusterCert {
	if s.store == nil {
		out := map[string]translate.ClusterCert{}
		for c, b := range s.issuer.Bundles(clusters) {
			out[c] = ClusterCert(b)
		}
		return out
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]translate.ClusterCert, len(clusters))
	for _, c := range clusters {
		if b, ok := s.certs[c]; ok {
			out[c] = b
		}
	}
	return out
}

// Start keeps the shared identities in sync until ctx ends (shared store only); it also
// re-translates when one is due for rotation.
func (s *sharedCerts) Start(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var istioErr string
	for {
		if err := s.issuer.IstioError(); err != nil && err.Error() != istioErr {
			istioErr = err.Error()
			s.log.Warn("istio ca not issued", "error", err)
		} else if err == nil {
			istioErr = ""
		}
		if s.store == nil {
			if next := s.issuer.NextRotation(); !next.IsZero() && time.Now().After(next) {
				s.rec.Kick()
			}
		} else {
			s.round(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type storedBundle struct {
	CertPEM  []byte       `json:"cert"`
	KeyPEM   []byte       `json:"key"`
	CAPEM    []byte       `json:"ca"`
	NotAfter time.Time    `json:"notAfter"`
	Istio    *pki.IstioCA `json:"istio,omitempty"`
}

// ClusterCert is what translation needs of a cluster's mesh identity and Istio CA.
func ClusterCert(b pki.MeshBundle) translate.ClusterCert {
	c := translate.ClusterCert{CertPEM: b.CertPEM, KeyPEM: b.KeyPEM, CAPEM: b.CAPEM}
	if ist := b.Istio; ist != nil {
		c.Istio = &translate.IstioCA{CertPEM: ist.CertPEM, KeyPEM: ist.KeyPEM, RootPEM: ist.RootPEM, ChainPEM: ist.ChainPEM}
	}
	return c
}

// sameBundle reports whether two bundles hold the same bytes.
func sameBundle(a, b pki.MeshBundle) bool {
	same := bytes.Equal(a.CertPEM, b.CertPEM) && bytes.Equal(a.CAPEM, b.CAPEM) && (a.Istio == nil) == (b.Istio == nil)
	if same && a.Istio != nil {
		same = bytes.Equal(a.Istio.CertPEM, b.Istio.CertPEM) && bytes.Equal(a.Istio.RootPEM, b.Istio.RootPEM)
	}
	return same
}

func (s *sharedCerts) round(ctx context.Context) {
	var registered []string
	for c := range translate.Clusters(s.rec.Config()) {
		registered = append(registered, c)
	}
	s.coord.SetClusters(registered)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	raw, err := s.store.MeshCerts(ctx)
	if err != nil {
		return // the store is down: keep what we have
	}
	stored := map[string]pki.MeshBundle{}
	for c, v := range raw {
		var b storedBundle
		if json.Unmarshal(v, &b) == nil {
			stored[c] = pki.MeshBundle{CertPEM: b.CertPEM, KeyPEM: b.KeyPEM, CAPEM: b.CAPEM, NotAfter: b.NotAfter, Istio: b.Istio}
		}
	}
	if active, _ := s.coord.Active(); active && s.coord.Leader() {
		s.issuer.Adopt(stored)
		var clusters []string
		for c := range translate.Clusters(s.rec.Config()) {
			clusters = append(clusters, c)
		}
		sort.Strings(clusters)
		for c, b := range s.issuer.Bundles(clusters) {
			if cur, ok := stored[c]; ok && sameBundle(cur, b) {
				continue
			}
			v, _ := json.Marshal(storedBundle{CertPEM: b.CertPEM, KeyPEM: b.KeyPEM, CAPEM: b.CAPEM, NotAfter: b.NotAfter, Istio: b.Istio})
			if err := s.store.PutMeshCert(ctx, c, v); err != nil {
				s.log.Warn("mesh certificate not stored", "cluster", c, "error", err)
				continue
			}
			stored[c] = b
			s.log.Info("mesh certificate issued", "cluster", c, "notAfter", b.NotAfter)
		}
	}
	next := make(map[string]translate.ClusterCert, len(stored))
	for c, b := range stored {
		next[c] = ClusterCert(b)
	}
	s.mu.Lock()
	changed := len(next) != len(s.certs)
	for c, b := range next {
		cur := s.certs[c]
		if !bytes.Equal(cur.CertPEM, b.CertPEM) || !bytes.Equal(cur.CAPEM, b.CAPEM) || (cur.Istio == nil) != (b.Istio == nil) ||
			(b.Istio != nil && !bytes.Equal(cur.Istio.CertPEM, b.Istio.CertPEM)) || (b.Istio != nil && !bytes.Equal(cur.Istio.RootPEM, b.Istio.RootPEM)) {
			changed = true
		}
	}
	s.certs = next
	s.mu.Unlock()
	if changed {
		s.rec.Kick()
	}
}
