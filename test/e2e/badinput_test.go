package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
)

func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	// A management server's admin API is verified with its CA (trustAdmin), unless the test
	// gives one.
	if i := slices.Index(args, "--server"); i >= 0 && i+1 < len(args) && !slices.Contains(args, "--admin-ca-file") {
		if a, ok := adminCAs.Load(args[i+1]); ok {
			args = slices.Concat(args, []string{"--admin-ca-file", a.(*adminTrust).caFile})
		}
	}
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = append(os.Environ(), "MESHRELAY_ADMIN_TOKEN="+adminToken)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// Bad input in the config directory is reported with file, resource, field and reason, and
// the previous good version of that file keeps flowing.
func TestBadInputInConfigDir(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "remote has blue", func() error { return outputHas(t, remote, blueInLocal) })

	writeFile(t, filepath.Join(s.config, "broken.yaml"), "kind: KubernetesCluster\nmetadata: [unclosed\n")
	writeFile(t, filepath.Join(s.config, "clusters.yaml"), `apiVersion: meshrelay.io/v1alpha1
kind: KubernetesCluster
metadata:
  name: local
---
apiVersion: meshrelay.io/v1alpha1
kind: KubernetesCluster
metadata:
  name: remote
spec:
  skipWarming: "yes"
`)
	poll.Eventually(t, 10*time.Second, "server reports both errors", func() error {
		errs := strings.Join(s.status(t).ConfigErrors, "\n")
		if !containsAll(errs, "broken.yaml", "malformed YAML", "clusters.yaml", `KubernetesCluster "remote"`, "spec.skipWarming", "boolean") {
			return fmt.Errorf("config errors: %s", errs)
		}
		return nil
	})
	// remote is still registered (the file's last good version stands) and changes still flow.
	writeFile(t, filepath.Join(local.discovery, "red.yaml"), serviceYAML("service-red", "10.1.0.2", 8080))
	poll.Eventually(t, 15*time.Second, "red reaches remote", func() error {
		return outputHas(t, remote, seKey("service-red"))
	})
	if err := outputHas(t, remote, blueInLocal); err != nil {
		t.Fatalf("bad config removed good output: %v", err)
	}
	out, _, err := cli(t, "get", "kubernetesclusters", "--server", s.admin)
	if err != nil || !containsAll(out, "local", "remote") {
		t.Fatalf("get kubernetesclusters: %v\n%s", err, out)
	}
	// Fixing the file clears the errors.
	writeFile(t, filepath.Join(s.config, "clusters.yaml"), "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: local\n---\napiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: remote\n")
	writeFile(t, filepath.Join(s.config, "broken.yaml"), "# fixed\n")
	poll.Eventually(t, 10*time.Second, "errors cleared", func() error {
		if errs := s.status(t).ConfigErrors; len(errs) > 0 {
			return fmt.Errorf("still: %v", errs)
		}
		return nil
	})
}

// Bad input through `meshrelay apply` is refused with a clear message and a non-zero exit;
// valid documents in the same file are applied; a refused update never replaces the good one.
func TestBadInputThroughApply(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local"})
	good := filepath.Join(h.dir, "good.yaml")
	writeFile(t, good, "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: east\nspec:\n  clusterDomain: east.local\n  skipWarming: true\n")
	if out, errOut, err := cli(t, "apply", "-f", good, "--server", s.admin); err != nil || !strings.Contains(out, `KubernetesCluster "east" applied`) {
		t.Fatalf("apply good: %v\n%s%s", err, out, errOut)
	}
	bad := filepath.Join(h.dir, "bad.yaml")
	writeFile(t, bad, `apiVersion: meshrelay.io/v1alpha1
kind: KubernetesCluster
metadata:
  name: east
spec:
  clusterDomain: "Not A Domain"
---
apiVersion: meshrelay.io/v1alpha1
kind: KubernetesCluster
metadata:
  name: west
spec:
  skipWarming: true
---
kind: [oops
`)
	out, errOut, err := cli(t, "apply", "-f", bad, "--server", s.admin)
	if err == nil {
		t.Fatalf("apply of bad input exited 0:\n%s%s", out, errOut)
	}
	if !containsAll(errOut, bad+": document 1", `KubernetesCluster "east"`, "spec.clusterDomain", "is not a DNS name", bad+": document 3", "malformed YAML") {
		t.Fatalf("unclear error:\n%s", errOut)
	}
	if !strings.Contains(out, `KubernetesCluster "west" applied`) {
		t.Fatalf("valid document in the same file not applied:\n%s", out)
	}
	got, _, err := cli(t, "get", "kubernetescluster", "east", "-o", "yaml", "--server", s.admin)
	if err != nil || !strings.Contains(got, "clusterDomain: east.local") {
		t.Fatalf("the good version of east was replaced: %v\n%s", err, got)
	}
	if _, errOut, err := cli(t, "get", "nosuchkind", "--server", s.admin); err == nil || !strings.Contains(errOut, `unknown kind "nosuchkind"`) {
		t.Fatalf("get of an unknown kind: %v %s", err, errOut)
	}
	// A reference to something that does not exist is reported in the resource's status
	// (once the cluster has reported and translation runs), and breaks nothing else.
	h.startAgent("local", s)
	rt := filepath.Join(h.dir, "rt.yaml")
	writeFile(t, rt, `apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata: {name: ghost-route, namespace: default}
spec:
  hosts: ["*"]
  http:
  - forwardTo:
      destinations:
      - ref: {name: default-ghost-80}
`)
	if _, errOut, err := cli(t, "apply", "-f", rt, "--server", s.admin); err != nil {
		t.Fatalf("apply route table: %v %s", err, errOut)
	}
	poll.Eventually(t, 15*time.Second, "status names the missing upstream", func() error {
		out, _, err := cli(t, "get", "routetables", "--server", s.admin)
		if err != nil || !containsAll(out, "ghost-route", `upstream "default-ghost-80" not found in cluster local`) {
			return fmt.Errorf("get routetables: %v\n%s", err, out)
		}
		return nil
	})
	// delete works for API-applied resources.
	if _, errOut, err := cli(t, "delete", "kubernetescluster", "west", "--server", s.admin); err != nil {
		t.Fatalf("delete: %v %s", err, errOut)
	}
	if _, _, err := cli(t, "get", "kubernetescluster", "west", "--server", s.admin); err == nil {
		t.Fatal("west still there after delete")
	}
}
