package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/charts"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
		eventually(t, 60*time.Second, ag.cluster+" connected", func() error {
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
	eventually(t, 60*time.Second, "ServiceEntry vd-service-blue in cluster B", func() error {
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
	eventually(t, 60*time.Second, "restarted agent connected", func() error {
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
	eventually(t, 60*time.Second, "six ServiceEntries in cluster B", func() error {
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
	eventually(t, 60*time.Second, "deletion guard active in agent kube-b", func() error {
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
	eventually(t, 60*time.Second, "meshrelay check reports the refusal", func() error {
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
	eventually(t, 60*time.Second, "the five ServiceEntries removed from cluster B", func() error {
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
	eventually(t, 60*time.Second, "ServiceEntry vd-service-blue removed from cluster B", func() error {
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
	eventually(t, 60*time.Second, a.cluster+" settled", func() error {
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

	eventually(t, 60*time.Second, "the Kubernetes service in the universal cluster's output", func() error {
		return outputHas(t, ub, seKey("service-blue"))
	})
	eventually(t, 60*time.Second, "the universal service applied in the Kubernetes cluster", func() error {
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
	eventually(t, 60*time.Second, "the Kubernetes service gone from the universal cluster's output", func() error {
		return outputLacks(t, ub, seKey("service-blue"))
	})
}
