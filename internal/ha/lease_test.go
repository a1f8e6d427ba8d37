package ha_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// redisless stands in for the shared store: with leader election only, the coordinator
// asks its Backend for nothing but the lease, which the LeaseBackend answers itself.
type redisless struct{ ha.Backend }

type replica struct {
	coord  *ha.Coordinator
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startReplica(t *testing.T, env *kubetest.Env, id string, ttl time.Duration) *replica {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	lb, err := ha.NewLeaseBackend(redisless{}, env.Config, "meshrelay-system", "meshrelay-server-leader", id, ttl, log)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{coord: ha.New(ha.Config{MgmtCluster: "mgmt", LeaderElection: true, ReplicaID: id, LeaseTTL: ttl}, lb, log)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	for _, f := range []func(context.Context) error{lb.Start, r.coord.Start} {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := f(ctx); err != nil {
				t.Errorf("replica %s: %v", id, err)
			}
		}()
	}
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	r.wg.Wait()
}

func leaders(rs ...*replica) (n int, which int) {
	for i, r := range rs {
		if r.coord.Leader() {
			n, which = n+1, i
		}
	}
	return n, which
}

// TestLeaseLeaderElection: replicas elect exactly one leader with a coordination.k8s.io
// Lease of a real API server, and another takes over soon after the leader stops (it
// releases the Lease).
func TestLeaseLeaderElection(t *testing.T) {
	env := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	if err := env.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshrelay-system"}}); err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	rs := []*replica{startReplica(t, env, "a", ttl), startReplica(t, env, "b", ttl), startReplica(t, env, "c", ttl)}
	var first int
	poll.Eventually(t, 15*time.Second, "one leader", func() error {
		n, w := leaders(rs...)
		if n != 1 {
			return fmt.Errorf("%d leaders", n)
		}
		first = w
		return nil
	})
	// Exactly one, steadily.
	for range 10 {
		if n, w := leaders(rs...); n != 1 || w != first {
			t.Fatalf("%d leaders (replica %d), want replica %d alone", n, w, first)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var lease coordinationv1.Lease
	if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: "meshrelay-system", Name: "meshrelay-server-leader"}, &lease); err != nil {
		t.Fatal(err)
	}
	if got, want := *lease.Spec.HolderIdentity, []string{"a", "b", "c"}[first]; got != want {
		t.Errorf("Lease held by %q, leader is %q", got, want)
	}

	stopped := time.Now()
	rs[first].stop()
	rest := append(append([]*replica{}, rs[:first]...), rs[first+1:]...)
	poll.Eventually(t, 3*ttl, "a new leader", func() error {
		if n, _ := leaders(rest...); n != 1 {
			return fmt.Errorf("%d leaders", n)
		}
		return nil
	})
	t.Logf("new leader %s after the old one stopped", time.Since(stopped).Round(10*time.Millisecond))
}
