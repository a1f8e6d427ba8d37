package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/demo"
	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// debugSnapshot reads a cluster's live input or output snapshot with the CLI (-o json) and
// decodes it, which checks every resource's hash against its body.
func debugSnapshot(t *testing.T, admin, cluster string, kind snapshot.Kind) (*snapshot.Snapshot, error) {
	t.Helper()
	out, errOut, err := cli(t, "debug", "snapshot", "--cluster", cluster, "--"+string(kind), "-o", "json", "--server", admin)
	if err != nil {
		return nil, fmt.Errorf("debug snapshot --cluster %s --%s: %v: %s", cluster, kind, err, errOut)
	}
	var s snapshot.Snapshot
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, fmt.Errorf("decode debug snapshot --cluster %s --%s: %w", cluster, kind, err)
	}
	return &s, nil
}

// tableRow returns the first line of a `get` table that has every field, or "".
func tableRow(table string, fields ...string) string {
	for _, line := range strings.Split(table, "\n") {
		have := map[string]bool{}
		for _, f := range strings.Fields(line) {
			have[f] = true
		}
		ok := true
		for _, f := range fields {
			ok = ok && have[f]
		}
		if ok {
			return line
		}
	}
	return ""
}

// Case 7: `debug snapshot` shows what an agent discovered (input) and what it gets (output),
// and `get services` / `get gateways` list what the agents discovered, with their cluster.
func TestOpsDebugSnapshot(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	gwPort, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	writeFile(t, filepath.Join(remote.discovery, "gateway.yaml"), demo.FailoverGatewayYAML(gwPort))
	poll.Eventually(t, 20*time.Second, "remote has blue", func() error { return outputHas(t, remote, blueInLocal) })

	// Input: what local's agent discovered, readable (one "# KEY" comment per resource).
	poll.Eventually(t, 10*time.Second, "debug snapshot of local's input", func() error {
		out, errOut, err := cli(t, "debug", "snapshot", "--cluster", "local", "--input", "--server", s.admin)
		if err != nil {
			return fmt.Errorf("%v: %s", err, errOut)
		}
		if !containsAll(out, "# Service/default/service-blue\n", "name: service-blue", "# EndpointSlice/default/service-blue-abc\n", "10.1.0.1") {
			return fmt.Errorf("input snapshot lacks blue:\n%s", out)
		}
		return nil
	})
	in, err := debugSnapshot(t, s.admin, "local", snapshot.Input)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := in.Resources["Service/default/service-blue"]; !ok {
		t.Fatalf("local's input (-o json) lacks the Service: %v", in.Keys())
	}
	// Output: what remote's agent gets, the same as it applied.
	out, errOut, err := cli(t, "debug", "snapshot", "--cluster", "remote", "--server", s.admin)
	if err != nil || !strings.Contains(out, "# "+blueInLocal+"\n") {
		t.Fatalf("debug snapshot of remote's output: %v %s\n%s", err, errOut, out)
	}
	outSnap, err := debugSnapshot(t, s.admin, "remote", snapshot.Output)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := outSnap.Resources[blueInLocal]; !ok {
		t.Fatalf("remote's output (-o json) lacks %s: %v", blueInLocal, outSnap.Keys())
	}
	table, _, err := cli(t, "debug", "snapshot", "--cluster", "remote", "-o", "table", "--server", s.admin)
	if err != nil || !containsAll(table, "hash "+outSnap.Hash, blueInLocal) {
		t.Fatalf("debug snapshot -o table: %v\n%s", err, table)
	}
	if _, errOut, err := cli(t, "debug", "snapshot", "--cluster", "nosuch", "--input", "--server", s.admin); err == nil || !strings.Contains(errOut, `no input snapshot for cluster "nosuch"`) {
		t.Fatalf("debug snapshot of an unknown cluster: %v %s", err, errOut)
	}

	// get services / get gateways: what the agents discovered, with the cluster.
	services, errOut, err := cli(t, "get", "services", "--server", s.admin)
	if err != nil {
		t.Fatalf("get services: %v %s", err, errOut)
	}
	if tableRow(services, "Service", "default", "service-blue", "local", "discovered") == "" {
		t.Fatalf("get services does not list service-blue discovered in local:\n%s", services)
	}
	if tableRow(services, "Service", "gloo-system", "failover", "remote", "discovered") == "" {
		t.Fatalf("get services does not list the failover Service discovered in remote:\n%s", services)
	}
	gateways, errOut, err := cli(t, "get", "gateways", "--server", s.admin)
	if err != nil {
		t.Fatalf("get gateways: %v %s", err, errOut)
	}
	if tableRow(gateways, "Gateway", "gloo-system", "failover-gateway", "remote", "discovered") == "" {
		t.Fatalf("get gateways does not list the failover gateway of remote:\n%s", gateways)
	}
	one, _, err := cli(t, "get", "service", "service-blue", "-o", "yaml", "--server", s.admin)
	if err != nil || !containsAll(one, "# discovered in cluster local", "name: service-blue") {
		t.Fatalf("get service service-blue -o yaml: %v\n%s", err, one)
	}
	clusters, _, err := cli(t, "get", "kubernetesclusters", "--server", s.admin)
	if err != nil || tableRow(clusters, "KubernetesCluster", "local", filepath.Join(s.config, "clusters.yaml")) == "" {
		t.Fatalf("get kubernetesclusters does not name the config file:\n%s", clusters)
	}
}

// Case 8: `debug translate`, run offline on the configuration and the inputs of a live
// server, plans exactly what the server publishes; only the mesh identity's certificates
// and keys (issued by a throwaway CA offline) differ.
func TestOpsDebugTranslateMatchesServer(t *testing.T) {
	w := newSeedWorld(t, nil, nil, nil)
	admin := w.server.admin
	clusters := []string{"local", "remote"}
	inputsDir := filepath.Join(w.h.dir, "inputs")
	var diff []string
	poll.Eventually(t, 30*time.Second, "offline translation equals the live outputs", func() error {
		// The inputs as the server holds them, through the CLI (readable YAML that is also
		// valid input for translate).
		before := map[string]string{}
		for _, c := range clusters {
			out, errOut, err := cli(t, "debug", "snapshot", "--cluster", c, "--input", "--server", admin)
			if err != nil {
				return fmt.Errorf("input of %s: %v %s", c, err, errOut)
			}
			writeFile(t, filepath.Join(inputsDir, c, "input.yaml"), out)
			in, err := debugSnapshot(t, admin, c, snapshot.Input)
			if err != nil {
				return err
			}
			before[c] = in.Hash
		}
		live := map[string]*snapshot.Snapshot{}
		for _, c := range clusters {
			s, err := debugSnapshot(t, admin, c, snapshot.Output)
			if err != nil {
				return err
			}
			live[c] = s
		}
		for _, c := range clusters { // the outputs must be those of these inputs
			in, err := debugSnapshot(t, admin, c, snapshot.Input)
			if err != nil {
				return err
			}
			if in.Hash != before[c] {
				return fmt.Errorf("input of %s changed while reading", c)
			}
		}
		out, errOut, err := cli(t, "debug", "translate", "--config-dir", w.server.config, "--inputs-dir", inputsDir, "-o", "json")
		if err != nil {
			return fmt.Errorf("debug translate: %v\n%s", err, errOut)
		}
		if !strings.Contains(errOut, "EPHEMERAL") {
			t.Fatalf("debug translate does not say its mesh identities are ephemeral:\n%s", errOut)
		}
		var offline map[string][]snapshot.Resource
		if err := json.Unmarshal([]byte(out), &offline); err != nil {
			return fmt.Errorf("decode debug translate -o json: %w\n%s", err, out)
		}
		diff = compareOutputs(live, offline, clusters)
		if len(diff) > 0 {
			return fmt.Errorf("offline plan differs from the live outputs:\n%s", strings.Join(diff, "\n"))
		}
		return nil
	})
	// The comparison covered what depends on the mesh identity: blue's failover endpoints
	// (priority 1, the remote failover gateway).
	const blueCLA = "EnvoyClusterLoadAssignment//default-service-blue-10000"
	s, err := debugSnapshot(t, admin, "local", snapshot.Output)
	if err != nil {
		t.Fatal(err)
	}
	if body := string(humanBody(t, s.Resources[blueCLA])); !strings.Contains(body, `"priority":1`) {
		t.Fatalf("local's live %s has no failover endpoints to compare: %s", blueCLA, body)
	}
}

// secretKinds carry certificate and key material, which an offline translation issues anew.
var secretKinds = map[string]bool{"EnvoySecret": true, "Secret": true}

// compareOutputs lists the differences between the live outputs and an offline plan: keys on
// one side only, and bodies that differ (but for Secrets, whose key material differs).
func compareOutputs(live map[string]*snapshot.Snapshot, offline map[string][]snapshot.Resource, clusters []string) []string {
	var diff []string
	for _, c := range clusters {
		plan := map[string]snapshot.Resource{}
		for _, r := range offline[c] {
			plan[r.Key] = r
		}
		for _, k := range live[c].Keys() {
			p, ok := plan[k]
			if !ok {
				diff = append(diff, fmt.Sprintf("%s: %s published by the server, missing offline", c, k))
				continue
			}
			if kind, _, _ := strings.Cut(k, "/"); secretKinds[kind] {
				continue
			}
			// The server holds Envoy bodies as protobuf; the offline plan prints them as JSON.
			l, err := envoyres.JSON(live[c].Resources[k])
			if err != nil {
				diff = append(diff, fmt.Sprintf("%s: %s: %v", c, k, err))
				continue
			}
			if !bytes.Equal(canonicalJSON(l), canonicalJSON(p.Body)) {
				diff = append(diff, fmt.Sprintf("%s: %s differs:\n  server:  %s\n  offline: %s", c, k, l, p.Body))
			}
		}
		for k := range plan {
			if _, ok := live[c].Resources[k]; !ok {
				diff = append(diff, fmt.Sprintf("%s: %s planned offline, not published by the server", c, k))
			}
		}
	}
	sort.Strings(diff)
	return diff
}

func canonicalJSON(b []byte) []byte {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return b
	}
	out, _ := json.Marshal(v)
	return out
}

// Case 11: deleting a resource that comes from --config-dir says where it comes from and
// how to remove it, instead of "not found".
func TestOpsDeleteConfigDirResource(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	file := filepath.Join(s.config, "clusters.yaml")
	_, errOut, code := cliExit(t, "delete", "kubernetescluster", "remote", "--server", s.admin)
	if code == 0 {
		t.Fatal("delete of a config-dir resource exited 0")
	}
	if !containsAll(errOut, `KubernetesCluster "remote"`, "config directory", file, "remove it from that file") || strings.Contains(errOut, "not found") {
		t.Fatalf("delete of a config-dir resource does not say where it comes from:\n%s", errOut)
	}
	// A resource that exists nowhere is still "not found".
	if _, errOut, code := cliExit(t, "delete", "kubernetescluster", "nosuch", "--server", s.admin); code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("delete of a missing resource: exit %d: %s", code, errOut)
	}
	// The advice works: removing it from the file removes it.
	writeFile(t, file, clustersYAML([]string{"local"}, nil))
	poll.Eventually(t, 10*time.Second, "remote gone after editing the file", func() error {
		if out, _, err := cli(t, "get", "kubernetescluster", "remote", "--server", s.admin); err == nil {
			return fmt.Errorf("still listed:\n%s", out)
		}
		return nil
	})
}

// Case 11: a YAML error in the third document of a file is reported at its line in the file,
// through apply -f and through --config-dir.
func TestOpsYAMLErrorLineInFile(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local"})
	src := "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: east\n" + // lines 1-4
		"---\napiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: west\n" + // lines 5-9
		"---\napiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata: [unclosed\n" // lines 10-13
	bad := filepath.Join(h.dir, "three.yaml")
	writeFile(t, bad, src)
	_, errOut, err := cli(t, "apply", "-f", bad, "--server", s.admin)
	if err == nil || !containsAll(errOut, bad+": document 3 (line 11)", "malformed YAML", "line 13:") {
		t.Fatalf("apply -f: %v\n%s", err, errOut)
	}
	writeFile(t, filepath.Join(s.config, "three.yaml"), src)
	poll.Eventually(t, 10*time.Second, "config-dir error names line 13", func() error {
		errs := strings.Join(s.status(t).ConfigErrors, "\n")
		if !containsAll(errs, "three.yaml: document 3 (line 11)", "line 13:") {
			return fmt.Errorf("config errors: %s", errs)
		}
		return nil
	})
}

// Case 11: the built binary says which build it is, and its agents report the same to the
// server.
func TestOpsVersion(t *testing.T) {
	out, errOut, err := cli(t, "version")
	if err != nil {
		t.Fatalf("version: %v %s", err, errOut)
	}
	first, _, _ := strings.Cut(out, "\n")
	first = strings.TrimSpace(strings.TrimPrefix(first, "meshrelay "))
	if first == "" || first == "dev" || first == "devel" || !strings.Contains(out, "go1.") {
		t.Fatalf("version of the built binary is not useful:\n%s", out)
	}
	if want := gitVersion(); want != "" && first != want {
		t.Fatalf("version %q, want the stamped %q:\n%s", first, want, out)
	}
	h := newHarness(t)
	s := h.startServer("server", []string{"local"})
	h.startAgent("local", s)
	poll.Eventually(t, 15*time.Second, "server logs the agent's version", func() error {
		return logContains(t, s.p, "agentVersion="+quoteIfNeeded(first))
	})
}

// quoteIfNeeded renders a value as slog's text handler does.
func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, " =\"") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// humanBody is r's body in its human form (envoyres.JSON).
func humanBody(t *testing.T, r snapshot.Resource) []byte {
	t.Helper()
	b, err := envoyres.JSON(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
