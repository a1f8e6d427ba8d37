package meshcerts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/meshcerts"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
	"github.com/meshrelay/meshrelay/internal/translate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var clusters = []string{"east", "west"}

// translation stands in for the reconciler: the registered clusters, and the kicks asking
// for a translation.
type translation struct {
	config []resource.Object
	kicks  atomic.Int32
}

func (t *translation) Config() []resource.Object { return t.config }
func (t *translation) Kick()                     { t.kicks.Add(1) }

func newTranslation(t *testing.T) *translation {
	t.Helper()
	var y []byte
	for _, c := range clusters {
		y = fmt.Appendf(y, "---\napiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: %s\n", c)
	}
	config, errs := resource.Parse("clusters.yaml", y)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return &translation{config: config}
}

func newIssuer(t *testing.T, ca *pki.CA) *pki.MeshIssuer {
	t.Helper()
	is := pki.NewMeshIssuer(ca, time.Hour)
	is.IssueIstioCAs(time.Hour)
	return is
}

func meshCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewMeshCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func sameCert(a, b translate.ClusterCert) bool {
	return bytes.Equal(a.CertPEM, b.CertPEM) && bytes.Equal(a.KeyPEM, b.KeyPEM) && bytes.Equal(a.CAPEM, b.CAPEM) &&
		a.Istio != nil && b.Istio != nil && bytes.Equal(a.Istio.CertPEM, b.Istio.CertPEM) && bytes.Equal(a.Istio.KeyPEM, b.Istio.KeyPEM) &&
		bytes.Equal(a.Istio.RootPEM, b.Istio.RootPEM) && bytes.Equal(a.Istio.ChainPEM, b.Istio.ChainPEM)
}

// A single server (no shared store) translates with its issuer's identities, the same bytes
// at every call.
func TestSingleServerUsesIssuer(t *testing.T) {
	issuer := newIssuer(t, meshCA(t))
	s := meshcerts.New(issuer, nil, ha.New(ha.Config{}, ha.Stores{}, slog.New(slog.DiscardHandler)), slog.New(slog.DiscardHandler))
	got := s.Source(clusters)
	bundles := issuer.Bundles(clusters)
	for _, c := range clusters {
		if !sameCert(got[c], meshcerts.ClusterCert(bundles[c])) {
			t.Errorf("cluster %s: source gave other bytes than the issuer's", c)
		}
	}
	again := s.Source(clusters)
	for _, c := range clusters {
		if !sameCert(again[c], got[c]) {
			t.Errorf("cluster %s: identity changed between two calls", c)
		}
	}
}

// Two management servers share a Redis: the passive one gives translation nothing until the
// active one's leader has issued and stored every cluster's identity, then exactly its
// bytes; the passive one's writes are fenced out.
func TestReplicasShareActiveIdentities(t *testing.T) {
	rs := redistest.Start(t)
	client := rs.Client(t)
	log := slog.New(slog.DiscardHandler)
	haStore := redisstore.NewHA(client, "")
	ca := meshCA(t)
	type server struct {
		coord  *ha.Coordinator
		certs  *redisstore.Certs
		issuer *pki.MeshIssuer
		shared *meshcerts.Shared
		rec    *translation
	}
	newServer := func(name string) *server {
		s := &server{rec: newTranslation(t), issuer: newIssuer(t, ca)}
		s.coord = ha.New(ha.Config{MgmtCluster: name, ActivePassive: true, ReplicaID: name, Interval: 20 * time.Millisecond}, ha.Stores{Lock: haStore}, log)
		s.certs = redisstore.NewCerts(client, "").WithFence(redisstore.Fence{Name: name, Epoch: s.coord.Epoch})
		s.shared = meshcerts.New(s.issuer, s.certs, s.coord, log)
		s.shared.SetReconciler(s.rec)
		return s
	}
	west, east := newServer("west"), newServer("east")

	ctx, cancel := context.WithCancel(t.Context())
	g, gctx := errgroup.WithContext(ctx)
	t.Cleanup(func() { cancel(); _ = g.Wait() })
	g.Go(func() error { return west.coord.Start(gctx) })
	poll.Eventually(t, 5*time.Second, "west takes the lock", func() error {
		if active, _ := west.coord.Active(); !active {
			return errors.New("west is not active")
		}
		return nil
	})
	g.Go(func() error { return east.coord.Start(gctx) })
	poll.Eventually(t, 5*time.Second, "east sees west's lock", func() error {
		if st := east.coord.Status(); st.Lock == nil || st.Lock.Name != "west" {
			return fmt.Errorf("east sees lock %+v", st.Lock)
		}
		return nil
	})

	// Nothing stored yet: the passive server holds translation, and may not store its own.
	if got := east.shared.Source(clusters); len(got) != 0 {
		t.Fatalf("passive server gave %d identities before any was stored", len(got))
	}
	g.Go(func() error { return east.shared.Start(gctx) })
	if err := east.certs.PutMeshCert(ctx, "east", []byte(`{}`)); !errors.Is(err, snapshot.ErrFenced) {
		t.Fatalf("passive server's write of a mesh identity: %v, want fenced", err)
	}

	g.Go(func() error { return west.shared.Start(gctx) })
	poll.Eventually(t, 10*time.Second, "east reads every identity west issued", func() error {
		got := east.shared.Source(clusters)
		if len(got) != len(clusters) {
			return fmt.Errorf("east has %d of %d identities", len(got), len(clusters))
		}
		return nil
	})
	issued := west.issuer.Bundles(clusters)
	fromWest, fromEast := west.shared.Source(clusters), east.shared.Source(clusters)
	for _, c := range clusters {
		want := meshcerts.ClusterCert(issued[c])
		if !sameCert(fromEast[c], want) || !sameCert(fromWest[c], want) {
			t.Errorf("cluster %s: the servers translate with other bytes than the active server issued", c)
		}
	}
	if east.rec.kicks.Load() == 0 {
		t.Error("east did not ask for a translation when the identities arrived")
	}
	stored, err := east.certs.MeshCerts(ctx)
	if err != nil || len(stored) != len(clusters) {
		t.Fatalf("stored identities: %d, %v", len(stored), err)
	}
}
