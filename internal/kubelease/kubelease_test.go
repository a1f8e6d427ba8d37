package kubelease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/kubelease"
	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/poll"
)

func TestParseName(t *testing.T) {
	if ns, n, err := kubelease.ParseName("meshrelay-system/leader"); err != nil || ns != "meshrelay-system" || n != "leader" {
		t.Errorf("ParseName: %q %q %v", ns, n, err)
	}
	for _, bad := range []string{"", "leader", "/leader", "ns/", "a/b/c"} {
		if _, _, err := kubelease.ParseName(bad); err == nil {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
}

// runLog records when each replica's run started and stopped.
type runLog struct {
	mu     sync.Mutex
	events []string // "start a", "stop a", ...
	active int
	maxAct int
}

func (r *runLog) run(id string, fail <-chan error) func(context.Context) error {
	return func(ctx context.Context) error {
		r.mu.Lock()
		r.events = append(r.events, "start "+id)
		r.active++
		r.maxAct = max(r.maxAct, r.active)
		r.mu.Unlock()
		var err error
		select {
		case <-ctx.Done():
		case err = <-fail:
		}
		time.Sleep(300 * time.Millisecond) // stopping takes a while: the Lease must wait for it
		r.mu.Lock()
		r.events = append(r.events, "stop "+id)
		r.active--
		r.mu.Unlock()
		return err
	}
}

func (r *runLog) snapshot() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...), r.maxAct
}

type replica struct {
	l      *kubelease.Leader
	cancel context.CancelFunc
	fail   chan error
	done   chan error
}

func start(t *testing.T, env *kubetest.Env, id string, log *runLog) *replica {
	t.Helper()
	r := &replica{fail: make(chan error, 1), done: make(chan error, 1)}
	var err error
	r.l, err = kubelease.NewLeader(env.Config, kubelease.Config{Namespace: "meshrelay-system", Name: "agent", Identity: id, Duration: 2 * time.Second},
		log.run(id, r.fail), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("replica %s did not stop", id)
		}
	})
	return r
}

func (r *replica) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func (r *replica) waitLeading(t *testing.T) {
	t.Helper()
	poll.Eventually(t, 15*time.Second, "the replica leads", func() error {
		if !r.l.Leading() {
			return errors.New("not leading")
		}
		return nil
	})
}

func startEnv(t *testing.T) *kubetest.Env {
	env := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	if err := env.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshrelay-system"}}); err != nil {
		t.Fatal(err)
	}
	return env
}

func holder(t *testing.T, env *kubetest.Env) string {
	var l coordinationv1.Lease
	if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: "meshrelay-system", Name: "agent"}, &l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// TestLeaderRunsOneAtATime: of two replicas of a real API server's Lease one runs; when
// its context ends it stops running before it releases the Lease, and only then does the
// other start. A run that fails releases the Lease too, and Run returns its error.
func TestLeaderRunsOneAtATime(t *testing.T) {
	env := startEnv(t)
	var log runLog
	rs := map[string]*replica{"a": start(t, env, "a", &log), "b": start(t, env, "b", &log)}
	var first string
	poll.Eventually(t, 15*time.Second, "one replica runs", func() error {
		ev, _ := log.snapshot()
		if len(ev) != 1 {
			return fmt.Errorf("events %v", ev)
		}
		first = ev[0][len("start "):]
		return nil
	})
	if h := holder(t, env); h != first {
		t.Fatalf("lease holder %q, running %q", h, first)
	}
	if st := rs[first].l.Status(); !st.Leading || st.Identity != first || st.Holder != first || st.Since.IsZero() {
		t.Errorf("leader status %+v", st)
	}
	second := map[string]string{"a": "b", "b": "a"}[first]
	poll.Eventually(t, 5*time.Second, "the standby observes the leader", func() error {
		if st := rs[second].l.Status(); st.Leading || st.Holder != first {
			return fmt.Errorf("standby status %+v", st)
		}
		return nil
	})

	rs[first].cancel()
	if err := rs[first].wait(t); err != nil {
		t.Fatalf("leader's Run after its context ended: %v", err)
	}
	poll.Eventually(t, 10*time.Second, "the other replica runs", func() error {
		if ev, _ := log.snapshot(); len(ev) != 3 {
			return fmt.Errorf("events %v", ev)
		}
		return nil
	})
	ev, maxActive := log.snapshot()
	if want := []string{"start " + first, "stop " + first, "start " + second}; fmt.Sprint(ev) != fmt.Sprint(want) || maxActive != 1 {
		t.Fatalf("events %v (at most %d running at once), want %v and one at a time", ev, maxActive, want)
	}

	boom := errors.New("boom")
	rs[second].fail <- boom
	if err := rs[second].wait(t); !errors.Is(err, boom) {
		t.Fatalf("Run after run failed: %v, want boom", err)
	}
	if h := holder(t, env); h != "" {
		t.Errorf("lease still held by %q after the run failed", h)
	}
}

// TestLeaderLosesLease: another holder takes the Lease over (as after a network partition
// outlasting the lease); the leader's run is stopped and Run returns ErrLost.
func TestLeaderLosesLease(t *testing.T) {
	env := startEnv(t)
	var log runLog
	r := start(t, env, "a", &log)
	r.waitLeading(t)
	var l coordinationv1.Lease
	if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: "meshrelay-system", Name: "agent"}, &l); err != nil {
		t.Fatal(err)
	}
	now := metav1.NewMicroTime(time.Now())
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.AcquireTime, l.Spec.RenewTime = ptr.To("intruder"), ptr.To[int32](60), &now, &now
	if err := env.Client.Update(t.Context(), &l); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t); !errors.Is(err, kubelease.ErrLost) {
		t.Fatalf("Run after losing the Lease: %v, want ErrLost", err)
	}
	if ev, _ := log.snapshot(); fmt.Sprint(ev) != "[start a stop a]" {
		t.Errorf("events %v", ev)
	}
	if h := holder(t, env); h != "intruder" {
		t.Errorf("lease holder %q after losing it, want the intruder's", h)
	}
}

// TestLeaderGivesUpCampaigning: a replica whose context ends while another holds the Lease
// returns nil without ever running.
func TestLeaderGivesUpCampaigning(t *testing.T) {
	env := startEnv(t)
	var log runLog
	a := start(t, env, "a", &log)
	a.waitLeading(t)
	b := start(t, env, "b", &log)
	time.Sleep(time.Second) // b campaigns for a while
	b.cancel()
	if err := b.wait(t); err != nil {
		t.Fatalf("standby's Run: %v", err)
	}
	if ev, _ := log.snapshot(); fmt.Sprint(ev) != "[start a]" {
		t.Errorf("events %v", ev)
	}
}
