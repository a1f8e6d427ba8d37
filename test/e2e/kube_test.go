package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/charts"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// TestKubeModeAcrossClusters runs a server and two agents in Kubernetes mode, each against
// its own real API server with Istio's CRDs: a Service and EndpointSlice created in cluster A
// appear in cluster B as a ServiceEntry that Istio's schema accepts; a restarted agent writes
// nothing; dropping most services at once is held back by the deletion guard and reported by
// /status, the metrics and `meshrelay check`; deleting one service removes its
// ServiceEntry; a hand-made ServiceEntry beside them is never touched.
func TestKubeModeAcrossClusters(t *testing.T) {
	h := newHarness(t)
	clusterA, clusterB := startKubeCluster(t), startKubeCluster(t)
	s := h.startServer("server", []string{"kube-a", "kube-b"})

	clusterB.createHandMade(t)
	handBefore := clusterB.versions(t)["hand-made"]

	a := h.startKubeAgent("kube-a", s, clusterA.env.Kubeconfig, "--kube-resync", "1s")
	b := h.startKubeAgent("kube-b", s, clusterB.env.Kubeconfig, "--kube-resync", "1s")
	for _, ag := range []*agent{a, b} {
		poll.Eventually(t, 60*time.Second, ag.cluster+" connected", func() error {
			st, err := kubeStatus(ag)
			if err != nil {
				return err
			}
			if !st.Connected || st.OutputVersion == 0 {
				return fmt.Errorf("connected %v, output version %d", st.Connected, st.OutputVersion)
			}
			return nil
		})
	}

	// A Service in A becomes a ServiceEntry in B.
	clusterA.createService(t, "service-blue", "10.1.0.10", 8080)
	poll.Eventually(t, 60*time.Second, "ServiceEntry vd-service-blue in cluster B", func() error {
		ses, err := clusterB.serviceEntries(t)
		if err != nil {
			return err
		}
		se := ses["vd-service-blue"]
		if se == nil {
			return fmt.Errorf("no vd-service-blue among %v", keysOfMap(ses))
		}
		if l := se.GetLabels(); l["app.kubernetes.io/managed-by"] != "meshrelay" || l["meshrelay.io/cluster"] != "kube-b" {
			return fmt.Errorf("labels %v", l)
		}
		hosts, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "hosts")
		eps, _, _ := unstructured.NestedSlice(se.Object, "spec", "endpoints")
		if !slices.Equal(hosts, []string{"service-blue.global"}) || len(eps) != 1 || !strings.Contains(fmt.Sprint(eps[0]), "10.1.0.10") {
			return fmt.Errorf("hosts %v, endpoints %v", hosts, eps)
		}
		return nil
	})
	waitKubeSettled(t, b)

	// An agent restart writes nothing when nothing changed.
	before := clusterB.versions(t)
	if err := b.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.p = h.start("agent-kube-b-again", b.args...)
	poll.Eventually(t, 60*time.Second, "restarted agent connected", func() error {
		st, err := kubeStatus(b)
		if err != nil {
			return err
		}
		if !st.Connected {
			return fmt.Errorf("not connected")
		}
		return nil
	})
	sleep(t, 3*time.Second) // let anything that would be written be written
	st, err := kubeStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.KubeSink.Applies != 0 || st.KubeSink.Deletes != 0 || st.KubeSink.LastError != "" {
		t.Errorf("restarted agent wrote: %+v", *st.KubeSink)
	}
	if after := clusterB.versions(t); !mapsEqual(before, after) {
		t.Errorf("resourceVersions changed across the restart: %v → %v", before, after)
	}

	// Five more services, then their endpoints all gone at once: 5 of B's 6 ServiceEntries
	// would go.
	svcs := []string{"svc-0", "svc-1", "svc-2", "svc-3", "svc-4"}
	for i, n := range svcs {
		clusterA.createService(t, n, fmt.Sprintf("10.1.1.%d", i+1), 8080)
	}
	poll.Eventually(t, 60*time.Second, "six ServiceEntries in cluster B", func() error {
		ses, err := clusterB.serviceEntries(t)
		if err != nil {
			return err
		}
		for _, n := range append([]string{"service-blue"}, svcs...) {
			if ses["vd-"+n] == nil {
				return fmt.Errorf("no vd-%s among %v", n, keysOfMap(ses))
			}
		}
		return nil
	})
	waitKubeSettled(t, b)
	held := clusterB.versions(t)
	// All five slices in one request, so that one output drops all five ServiceEntries.
	clusterA.deleteSlices(t, "kubernetes.io/service-name in (svc-0,svc-1,svc-2,svc-3,svc-4)")
	poll.Eventually(t, 60*time.Second, "deletion guard active in agent kube-b", func() error {
		st, err := kubeStatus(b)
		if err != nil {
			return err
		}
		g := st.KubeSink.DeletionGuard
		if !g.Active || g.Deletions != 5 || g.Owned != 6 || !strings.Contains(g.Message, "delete 5 of the 6 objects") {
			return fmt.Errorf("guard %+v", g)
		}
		return nil
	})
	for _, n := range svcs {
		clusterA.deleteService(t, n)
	}
	if v := mustMetric(t, b.admin, "meshrelay_sink_deletion_guard_active"); v != 1 {
		t.Errorf("meshrelay_sink_deletion_guard_active = %v", v)
	}
	if v := mustMetric(t, b.admin, "meshrelay_sink_deletions_refused_total"); v < 5 {
		t.Errorf("meshrelay_sink_deletions_refused_total = %v", v)
	}
	poll.Eventually(t, 60*time.Second, "meshrelay check reports the refusal", func() error {
		out, errOut, code := cliExit(t, "check", "--server", s.admin)
		if code == 0 || !strings.Contains(out+errOut, "deletion guard") || !strings.Contains(out+errOut, "cluster kube-b") {
			return fmt.Errorf("exit %d:\n%s%s", code, out, errOut)
		}
		return nil
	})
	sleep(t, 3*time.Second) // resyncs run meanwhile and must not delete either
	if after := clusterB.versions(t); !mapsEqual(held, after) {
		t.Errorf("the held-back output changed cluster B: %v → %v", held, after)
	}

	// The operator confirms: agent B runs again with the guard off and the deletions go through.
	if err := b.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.args = append(b.args, "--max-delete-fraction", "1")
	b.p = h.start("agent-kube-b-confirmed", b.args...)
	poll.Eventually(t, 60*time.Second, "the five ServiceEntries removed from cluster B", func() error {
		ses, err := clusterB.serviceEntries(t)
		if err != nil {
			return err
		}
		for _, n := range svcs {
			if ses["vd-"+n] != nil {
				return fmt.Errorf("vd-%s still there", n)
			}
		}
		if ses["vd-service-blue"] == nil {
			return fmt.Errorf("vd-service-blue gone too")
		}
		return nil
	})
	if st, err := kubeStatus(b); err != nil || st.KubeSink.DeletionGuard.Active {
		t.Errorf("guard after confirmation: %+v %v", st.KubeSink, err)
	}

	// Deleting one service removes its ServiceEntry (one of six: within the guard).
	clusterA.deleteService(t, "service-blue")
	poll.Eventually(t, 60*time.Second, "ServiceEntry vd-service-blue removed from cluster B", func() error {
		ses, err := clusterB.serviceEntries(t)
		if err != nil {
			return err
		}
		if ses["vd-service-blue"] != nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if got := clusterB.versions(t)["hand-made"]; got != handBefore {
		t.Errorf("hand-made ServiceEntry resourceVersion %s → %q", handBefore, got)
	}
}

// waitKubeSettled waits until an agent's sink has stopped writing for a while and has no
// error.
func waitKubeSettled(t *testing.T, a *agent) {
	t.Helper()
	var last string
	stable := 0
	poll.Eventually(t, 60*time.Second, a.cluster+" settled", func() error {
		st, err := kubeStatus(a)
		if err != nil {
			return err
		}
		cur := fmt.Sprintf("%d/%d/%d/%s", st.OutputVersion, st.KubeSink.Applies, st.KubeSink.Deletes, st.KubeSink.LastError)
		if cur != last || st.KubeSink.LastError != "" {
			last, stable = cur, 0
			return fmt.Errorf("changing: %s", cur)
		}
		if stable++; stable < 20 { // about a second unchanged
			return fmt.Errorf("settling")
		}
		return nil
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func keysOfMap[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestKubeAndUniversalInOneMesh runs a Kubernetes-mode agent, with nothing but the
// meshrelay-agent chart's RBAC, and a universal-mode agent against one server: each cluster
// sees the other's service (the Kubernetes one as an applied ServiceEntry, the universal one
// in its output directory), and removing the Kubernetes service removes it from the
// universal cluster.
func TestKubeAndUniversalInOneMesh(t *testing.T) {
	h := newHarness(t)
	kc := startKubeCluster(t)
	s := h.startServer("server", []string{"kube-a", "uni-b"})

	sa := chartIdentity(t, kc.env, charts.Agent, "meshrelay-agent", map[string]any{
		"cluster": "kube-a", "relay": map[string]any{"address": s.relay},
	})
	ka := h.startKubeAgent("kube-a", s, sa.Kubeconfig)
	ub := h.startAgent("uni-b", s)

	kc.createService(t, "service-blue", "10.1.0.10", 8080)
	writeFile(t, filepath.Join(ub.discovery, "green.yaml"), serviceYAML("service-green", "10.2.0.20", 8080))

	poll.Eventually(t, 60*time.Second, "the Kubernetes service in the universal cluster's output", func() error {
		return outputHas(t, ub, seKey("service-blue"))
	})
	poll.Eventually(t, 60*time.Second, "the universal service applied in the Kubernetes cluster", func() error {
		ses, err := kc.serviceEntries(t)
		if err != nil {
			return err
		}
		se := ses["vd-service-green"]
		if se == nil {
			return fmt.Errorf("no vd-service-green among %v", keysOfMap(ses))
		}
		if eps, _, _ := unstructured.NestedSlice(se.Object, "spec", "endpoints"); len(eps) != 1 || !strings.Contains(fmt.Sprint(eps[0]), "10.2.0.20") {
			return fmt.Errorf("endpoints %v", eps)
		}
		return nil
	})
	waitKubeSettled(t, ka)
	if st, err := kubeStatus(ka); err != nil || st.KubeSink.LastError != "" {
		t.Fatalf("agent under the chart's RBAC: %+v %v", st.KubeSink, err)
	}

	kc.deleteService(t, "service-blue")
	poll.Eventually(t, 60*time.Second, "the Kubernetes service gone from the universal cluster's output", func() error {
		return outputLacks(t, ub, seKey("service-blue"))
	})
}

// TestKubeAgentReplicasLeaderElection runs two agent replicas of one Kubernetes cluster
// with the agent chart's RBAC for leaderElection: they elect a leader with a
// coordination.k8s.io Lease; only the leader connects and writes. When the leader is killed
// (kill -9), the standby takes the Lease once it expires, serves the cluster and re-applies
// the output without rewriting or deleting a single object. A leader that stops cleanly
// releases the Lease before it exits, and the other takes over. A leader whose Lease is taken
// by another holder exits non-zero and leaves what it applied alone.
func TestKubeAgentReplicasLeaderElection(t *testing.T) {
	h := newHarness(t)
	kc := startKubeCluster(t)
	s := h.startServer("server", []string{"kube-a", "uni-b"})
	sa := chartIdentity(t, kc.env, charts.Agent, "meshrelay-agent", map[string]any{
		"cluster": "kube-a", "relay": map[string]any{"address": s.relay}, "replicas": 2, "leaderElection": true,
	})
	const lease = "meshrelay-agent" // the chart's Lease: <release namespace>/<full name>
	start := func(id string) *agent {
		return h.startKubeReplica("kube-a", id, s, sa.Kubeconfig, "--leader-election", "--leader-election-lease", "meshrelay-system/"+lease,
			"--leader-election-id", id, "--lease-duration", "3s")
	}
	replicas := map[string]*agent{"r1": start("r1"), "r2": start("r2")}
	other := map[string]string{"r1": "r2", "r2": "r1"}
	ub := h.startAgent("uni-b", s)
	writeFile(t, filepath.Join(ub.discovery, "green.yaml"), serviceYAML("service-green", "10.2.0.20", 8080))
	kc.createService(t, "service-blue", "10.1.0.10", 8080)

	var leader string
	poll.Eventually(t, 30*time.Second, "a replica holds the Lease", func() error {
		if leader = leaseHolder(t, kc.env, lease); replicas[leader] == nil {
			return fmt.Errorf("lease holder %q", leader)
		}
		return nil
	})
	standby := other[leader]
	poll.Eventually(t, 60*time.Second, "the leader applies the universal service and publishes the Kubernetes one", func() error {
		if err := seHas(t, kc, "vd-service-green"); err != nil {
			return err
		}
		return outputHas(t, ub, seKey("service-blue"))
	})
	waitKubeSettled(t, replicas[leader])
	waitLeading(t, replicas[leader], true, leader)
	st := waitLeading(t, replicas[standby], false, leader)
	if st.Connected || st.KubeSink.Applies != 0 || st.OutputVersion != 0 {
		t.Fatalf("standby %s connected=%v applies=%d output=%d, want idle", standby, st.Connected, st.KubeSink.Applies, st.OutputVersion)
	}
	if code := httpStatus(t, replicas[standby].admin, "/readyz"); code != http.StatusOK {
		t.Errorf("standby /readyz %d, want 200: a standby is ready to take over", code)
	}
	before := kc.versions(t)

	// The leader vanishes without releasing the Lease: the standby takes over once it expires.
	replicas[leader].p.Kill()
	poll.Eventually(t, 30*time.Second, "the standby takes the Lease", func() error {
		if got := leaseHolder(t, kc.env, lease); got != standby {
			return fmt.Errorf("lease holder %q, want %q", got, standby)
		}
		return nil
	})
	waitLeading(t, replicas[standby], true, standby)
	poll.Eventually(t, 30*time.Second, "the new leader connected", func() error {
		st, err := kubeStatus(replicas[standby])
		if err != nil || !st.Connected || st.OutputVersion == 0 {
			return fmt.Errorf("connected=%v output=%d %v", st.Connected, st.OutputVersion, err)
		}
		return nil
	})
	waitKubeSettled(t, replicas[standby])
	if after := kc.versions(t); !mapsEqual(before, after) {
		t.Errorf("taking over rewrote objects: resourceVersions %v, then %v", before, after)
	}
	if st, _ := kubeStatus(replicas[standby]); st.KubeSink.Deletes != 0 {
		t.Errorf("taking over deleted %d objects", st.KubeSink.Deletes)
	}
	writeFile(t, filepath.Join(ub.discovery, "red.yaml"), serviceYAML("service-red", "10.2.0.30", 8080))
	kc.createService(t, "svc-new", "10.1.0.40", 8080)
	poll.Eventually(t, 60*time.Second, "the new leader applies and discovers", func() error {
		if err := seHas(t, kc, "vd-service-red"); err != nil {
			return err
		}
		return outputHas(t, ub, seKey("svc-new"))
	})

	// The killed replica comes back as the standby; the leader stops cleanly and releases the
	// Lease on its way out, so the comeback takes over without waiting for it to expire.
	replicas[leader] = start(leader)
	waitLeading(t, replicas[leader], false, standby)
	if err := replicas[standby].p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := leaseHolder(t, kc.env, lease); got == standby {
		t.Fatalf("the stopped leader %s still holds the Lease", standby)
	}
	waitLeading(t, replicas[leader], true, leader)
	if err := os.Remove(filepath.Join(ub.discovery, "red.yaml")); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 60*time.Second, "the comeback leader prunes the removed service", func() error {
		if err := seHas(t, kc, "vd-service-red"); err == nil {
			return errors.New("vd-service-red still applied")
		}
		return seHas(t, kc, "vd-service-green")
	})

	// Another holder takes the Lease over (as after a partition outlasting it): the leader
	// cannot renew, stops and exits non-zero, and what it applied stays.
	waitKubeSettled(t, replicas[leader])
	before = kc.versions(t)
	var l coordinationv1.Lease
	if err := kc.env.Client.Get(t.Context(), client.ObjectKey{Namespace: "meshrelay-system", Name: lease}, &l); err != nil {
		t.Fatal(err)
	}
	now := metav1.NewMicroTime(time.Now())
	intruder, hold := "intruder", int32(600)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.AcquireTime, l.Spec.RenewTime = &intruder, &hold, &now, &now
	if err := kc.env.Client.Update(t.Context(), &l); err != nil {
		t.Fatal(err)
	}
	select {
	case <-replicas[leader].p.Done():
		if err := replicas[leader].p.Err(); err == nil {
			t.Error("the leader that lost its Lease exited with status 0, want non-zero")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the leader that lost its Lease is still running")
	}
	if after := kc.versions(t); !mapsEqual(before, after) {
		t.Errorf("losing the Lease changed objects: resourceVersions %v, then %v", before, after)
	}
}

// httpStatus is the status code of GET path on addr.
func httpStatus(t *testing.T, addr, path string) int {
	t.Helper()
	resp, err := adminGet(t.Context(), addr, path, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// seHas is nil when the ServiceEntry name exists in the cluster.
func seHas(t *testing.T, kc *kubeCluster, name string) error {
	ses, err := kc.serviceEntries(t)
	if err != nil {
		return err
	}
	if ses[name] == nil {
		return fmt.Errorf("no %s among %v", name, keysOfMap(ses))
	}
	return nil
}

// waitLeading waits until the replica's /status says whether it leads and who holds the
// Lease, and returns that status.
func waitLeading(t *testing.T, a *agent, leading bool, holder string) kubeAgentStatus {
	t.Helper()
	var st kubeAgentStatus
	poll.Eventually(t, 30*time.Second, fmt.Sprintf("%s leading=%v under %s", a.state, leading, holder), func() error {
		var err error
		if st, err = kubeStatus(a); err != nil {
			return err
		}
		if st.Leader == nil || st.Leader.Leading != leading || st.Leader.Holder != holder {
			return fmt.Errorf("leader election %+v", st.Leader)
		}
		return nil
	})
	return st
}
