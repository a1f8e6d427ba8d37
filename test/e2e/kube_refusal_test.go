package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// namespacedVirtualDestinations export service-blue once more from each of two namespaces:
// their ServiceEntries go to those namespaces in every other cluster.
const namespacedVirtualDestinations = `apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata: {name: service-blue, namespace: doomed}
spec:
  hosts: [service-blue.doomed.global]
  ports: [{number: 80, targetPort: {name: http}}]
  services: [{name: service-blue}]
---
apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata: {name: service-blue, namespace: fresh}
spec:
  hosts: [service-blue.fresh.global]
  ports: [{number: 80, targetPort: {name: http}}]
  services: [{name: service-blue}]
`

// TestKubeOutputObjectRefusedRestApplied (issue 12, case 10): cluster kube-b's output holds
// ServiceEntries in three namespaces: default, fresh (which does not exist in kube-b) and
// doomed (being deleted: Terminating, so the API server refuses new objects in it). The agent
// applies what the cluster takes — default's, and fresh's after creating namespace fresh
// labelled as meshrelay's — and reports the one refused object in its /status and metrics;
// the version counts as applied (ACK with the refusal), and the server's /status and
// `meshrelay check` name the cluster, the object and the reason. Deleting a service still
// deletes its ServiceEntry beside the refused one.
func TestKubeOutputObjectRefusedRestApplied(t *testing.T) {
	h := newHarness(t)
	clusterA, clusterB := startKubeCluster(t), startKubeCluster(t)
	s := h.startServer("server", []string{"kube-a", "kube-b"})
	writeFile(t, filepath.Join(s.config, "namespaced-vds.yaml"), namespacedVirtualDestinations)

	// Namespace doomed in kube-b is Terminating for as long as the test runs: envtest runs no
	// namespace controller to finish the deletion.
	ctx := t.Context()
	if _, err := clusterB.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := clusterB.cs.CoreV1().Namespaces().Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ns, err := clusterB.cs.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{}); err != nil || ns.Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("namespace doomed: %v %v", ns.Status.Phase, err)
	}

	clusterA.createService(t, "service-blue", "10.1.0.10", 8080)
	clusterA.createService(t, "service-green", "10.1.0.20", 8080)
	h.startKubeAgent("kube-a", s, clusterA.env.Kubeconfig)
	b := h.startKubeAgent("kube-b", s, clusterB.env.Kubeconfig)

	const refusedKey = "ServiceEntry/doomed/vd-service-blue"
	type refusal struct {
		Key    string `json:"key"`
		Reason string `json:"reason"`
	}
	var agentSt struct {
		OutputVersion  uint64    `json:"outputVersion"`
		RefusedObjects []refusal `json:"refusedObjects"`
		KubeSink       struct {
			LastError string `json:"lastError"`
		} `json:"kubeSink"`
	}
	poll.Eventually(t, 60*time.Second, "kube-b applied its output except "+refusedKey, func() error {
		for _, ns := range []string{"default", "fresh"} {
			if _, err := clusterB.dyn.Resource(serviceEntries).Namespace(ns).Get(ctx, "vd-service-blue", metav1.GetOptions{}); err != nil {
				return fmt.Errorf("ServiceEntry %s/vd-service-blue: %w", ns, err)
			}
		}
		if _, err := clusterB.dyn.Resource(serviceEntries).Namespace("default").Get(ctx, "vd-service-green", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("ServiceEntry default/vd-service-green: %w", err)
		}
		if err := getJSON(b.admin, "/status", &agentSt); err != nil {
			return err
		}
		if len(agentSt.RefusedObjects) != 1 || agentSt.RefusedObjects[0].Key != refusedKey {
			return fmt.Errorf("agent refusedObjects %+v, want %s", agentSt.RefusedObjects, refusedKey)
		}
		return nil
	})
	if r := agentSt.RefusedObjects[0].Reason; !strings.Contains(r, "being terminated") {
		t.Errorf("refusal reason %q does not give the API server's reason", r)
	}
	if agentSt.KubeSink.LastError != "" {
		t.Errorf("kube sink lastError %q: a refused object is not a failed step", agentSt.KubeSink.LastError)
	}
	if v := mustMetric(t, b.admin, "meshrelay_agent_objects_refused"); v != 1 {
		t.Errorf("meshrelay_agent_objects_refused = %v, want 1", v)
	}
	ns, err := clusterB.cs.CoreV1().Namespaces().Get(ctx, "fresh", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l := ns.Labels["app.kubernetes.io/managed-by"]; l != "meshrelay" {
		t.Errorf("namespace fresh created without app.kubernetes.io/managed-by=meshrelay: %v", ns.Labels)
	}

	// The server counts the version as applied, with the refusal.
	var serverSt struct {
		Clusters []struct {
			Name           string    `json:"name"`
			InSync         bool      `json:"inSync"`
			RefusedObjects []refusal `json:"refusedObjects"`
		} `json:"clusters"`
	}
	poll.Eventually(t, 30*time.Second, "the server shows the refusal", func() error {
		if err := getJSON(s.admin, "/status", &serverSt); err != nil {
			return err
		}
		for _, c := range serverSt.Clusters {
			if c.Name != "kube-b" {
				continue
			}
			if !c.InSync || len(c.RefusedObjects) != 1 || c.RefusedObjects[0].Key != refusedKey {
				return fmt.Errorf("kube-b in sync %v, refused %+v", c.InSync, c.RefusedObjects)
			}
			return nil
		}
		return fmt.Errorf("no kube-b in %+v", serverSt.Clusters)
	})
	if v := mustMetric(t, s.admin, "meshrelay_output_objects_refused", `cluster="kube-b"`); v != 1 {
		t.Errorf("server meshrelay_output_objects_refused{cluster=kube-b} = %v, want 1", v)
	}
	out, _, code := cliExit(t, "check", "--server", s.admin)
	if code == 0 {
		t.Errorf("meshrelay check passed with a refused object:\n%s", out)
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, refusedKey) {
			line = l
		}
	}
	if !strings.Contains(line, "kube-b") || !strings.Contains(line, "being terminated") {
		t.Errorf("meshrelay check does not name cluster kube-b, %s and the reason:\n%s", refusedKey, out)
	}

	// Deletion still works beside the refused object: service-green goes, so does its
	// ServiceEntry; service-blue's stay.
	clusterA.deleteService(t, "service-green")
	poll.Eventually(t, 60*time.Second, "ServiceEntry default/vd-service-green deleted", func() error {
		ses, err := clusterB.serviceEntries(t)
		if err != nil {
			return err
		}
		if ses["vd-service-green"] != nil {
			return fmt.Errorf("still there")
		}
		if ses["vd-service-blue"] == nil {
			return fmt.Errorf("vd-service-blue deleted too")
		}
		return nil
	})
	if _, err := clusterB.dyn.Resource(serviceEntries).Namespace("fresh").Get(ctx, "vd-service-blue", metav1.GetOptions{}); err != nil {
		t.Errorf("ServiceEntry fresh/vd-service-blue: %v", err)
	}
}
