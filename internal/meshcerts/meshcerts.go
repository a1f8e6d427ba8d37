// Package meshcerts gives translation every cluster's mesh identity (its certificate, key
// and CA, and its Istio workload CA). A single server takes them from its issuer. Replicas
// sharing a store use the same bytes: the leader of the active management server issues
// them and stores them, and every replica reads them from the store.
package meshcerts

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// Store keeps the mesh identities every replica shares, by cluster (redisstore.Certs
// implements it, fenced by the global lock).
type Store interface {
	PutMeshCert(ctx context.Context, cluster string, value []byte) error
	MeshCerts(ctx context.Context) (map[string][]byte, error)
}

// Role is this server's place among its peers (ha.Coordinator implements it).
type Role interface {
	// SetClusters tells it every registered cluster.
	SetClusters(clusters []string)
	// Active reports whether this management server may write.
	Active() (bool, uint64)
	// Leader reports whether this replica leads its management cluster.
	Leader() bool
}

// Reconciler is the translation the identities are for (reconcile.Reconciler implements
// it).
type Reconciler interface {
	// Config is the configuration, whose KubernetesClusters get identities.
	Config() []resource.Object
	// Kick asks for a translation now.
	Kick()
}

// Shared keeps the mesh identities every replica uses.
type Shared struct {
	issuer *pki.MeshIssuer
	store  Store // nil: single server, the issuer is used directly
	role   Role
	rec    Reconciler // set by SetReconciler before Start
	log    *slog.Logger

	mu    sync.RWMutex // guards certs
	certs map[string]translate.ClusterCert
}

// New keeps the identities issuer issues; with a store (nil for a single server) they are
// shared through it, and role says whether this server issues them. It does no I/O.
func New(issuer *pki.MeshIssuer, store Store, role Role, log *slog.Logger) *Shared {
	return &Shared{issuer: issuer, store: store, role: role, log: log}
}

// SetReconciler gives the translation to keep in sync (the reconciler takes Source, so it
// is made after New); call it before Start.
func (s *Shared) SetReconciler(rec Reconciler) { s.rec = rec }

// Source is the reconciler's CertSource. With a shared store it gives only what the store
// holds: the reconciler holds translation until every registered cluster's identity is
// there (a server restarted on an emptied store waits for the leader to issue them again).
func (s *Shared) Source(clusters []string) map[string]translate.ClusterCert {
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

// Expiries returns when each cluster's mesh identity (its gateways' certificate) in use
// expires; it issues nothing.
func (s *Shared) Expiries() map[string]time.Time {
	if s.store == nil {
		return s.issuer.Expiries()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]time.Time, len(s.certs))
	for c, cc := range s.certs {
		if blk, _ := pem.Decode(cc.CertPEM); blk != nil {
			if cert, err := x509.ParseCertificate(blk.Bytes); err == nil {
				out[c] = cert.NotAfter
			}
		}
	}
	return out
}

// Start keeps the shared identities in sync until ctx ends (shared store only); it also
// re-translates when one is due for rotation.
func (s *Shared) Start(ctx context.Context) error {
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

func (s *Shared) round(ctx context.Context) {
	var registered []string
	for c := range translate.Clusters(s.rec.Config()) {
		registered = append(registered, c)
	}
	s.role.SetClusters(registered)
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
	if active, _ := s.role.Active(); active && s.role.Leader() {
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
