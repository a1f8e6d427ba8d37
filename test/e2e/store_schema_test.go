package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/boltstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/boltstore/boltstoretest"
)

// TestOpsServerOpensOldStoreSchemas (issue 16, ADR 0013): a server started on a data
// directory whose store.db an earlier version wrote (schema "1", one value per snapshot;
// schema "2", every resource a value) migrates it, and serves the same configuration and
// the same outputs to its reconnecting agents: nothing applied through the API is lost, no
// output changes, and the file is schema "3" afterwards.
func TestOpsServerOpensOldStoreSchemas(t *testing.T) {
	for _, schema := range []string{"1", "2"} {
		t.Run("schema"+schema, func(t *testing.T) { testServerOpensOldStore(t, schema) })
	}
}

func testServerOpensOldStore(t *testing.T, schema string) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	agents := []*agent{h.startAgent("local", s), h.startAgent("remote", s)}
	local, remote := agents[0], agents[1]
	for i := range 4 {
		writeFile(t, filepath.Join(local.discovery, fmt.Sprintf("svc-%d.yaml", i)), serviceYAML(fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.2.0.%d", i+1), 80))
	}
	// A configuration resource only the store knows (applied through the API, not in the
	// config directory).
	vd := filepath.Join(h.dir, "applied-vd.yaml")
	writeFile(t, vd, extraVD("applied-vd", "svc-0"))
	if out, errOut, err := cli(t, "apply", "-f", vd, "--server", s.admin); err != nil {
		t.Fatalf("meshrelay apply -f %s: %v\n%s%s", vd, err, out, errOut)
	}
	poll.Eventually(t, 30*time.Second, "the applied VirtualDestination reaches remote", func() error { return outputHas(t, remote, seKey("applied-vd")) })
	poll.Eventually(t, 30*time.Second, "every service reaches remote", func() error { return outputHas(t, remote, seKey("svc-3")) })
	settledOutputs(t, s, agents)

	if err := s.p.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop server: %v", err)
	}
	path := filepath.Join(s.dataDir, boltstore.FileName)
	before := readStore(t, path)
	if len(before.Config) == 0 || len(before.Snapshots[snapshot.Output]) != 2 {
		t.Fatalf("store before the rewrite: %d configuration resources, %d outputs; want the applied one and 2", len(before.Config), len(before.Snapshots[snapshot.Output]))
	}
	rewriteStoreAs(t, path, schema, before)

	h.restartServer(s, "server-on-schema-"+schema)
	settledOutputs(t, s, agents)
	if err := logContains(t, s.p, `msg="store migrated"`); err != nil {
		t.Errorf("the server does not say it migrated the store: %v", err)
	}
	if err := outputHas(t, remote, seKey("applied-vd")); err != nil {
		t.Fatalf("after the migration: %v", err)
	}
	out, errOut, err := cli(t, "get", "virtualdestinations", "--server", s.admin)
	if err != nil || !strings.Contains(out, "applied-vd") {
		t.Fatalf("meshrelay get virtualdestinations after the migration: %v\n%s%s", err, out, errOut)
	}

	if err := s.p.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop server: %v", err)
	}
	if got := storeSchema(t, path); got != "3" {
		t.Fatalf("store.db has schema %q after the server ran on it, want 3", got)
	}
	after := readStore(t, path)
	if after.ConfigRev != before.ConfigRev || !sameConfig(after.Config, before.Config) {
		t.Errorf("configuration after the migration: revision %d, %d resources; before: revision %d, %d resources",
			after.ConfigRev, len(after.Config), before.ConfigRev, len(before.Config))
	}
	for kind, snaps := range before.Snapshots {
		if len(after.Snapshots[kind]) != len(snaps) {
			t.Errorf("%d %s snapshots after the migration, %d before", len(after.Snapshots[kind]), kind, len(snaps))
		}
		for c, snap := range snaps {
			if err := sameResources(after.Snapshots[kind][c], snap); err != nil {
				t.Errorf("%s of %s after the migration: %v", kind, c, err)
			}
		}
	}
}

// reissued are the output resources a single server issues anew at every start (the mesh
// identity and Istio CA of each cluster, from its issuer, not from the store): they change
// on any restart, migration or not.
var reissued = map[string]bool{"EnvoySecret//meshrelay-mesh-identity": true, "Secret/istio-system/cacerts": true}

// sameResources is nil when got has the keys of want and the same bodies, but for reissued
// resources.
func sameResources(got, want *snapshot.Snapshot) error {
	if got == nil {
		return fmt.Errorf("missing")
	}
	for k, r := range want.Resources {
		g, ok := got.Resources[k]
		if !ok {
			return fmt.Errorf("resource %s lost", k)
		}
		if g.Hash != r.Hash && !reissued[k] {
			return fmt.Errorf("resource %s changed", k)
		}
	}
	if got.Len() != want.Len() {
		return fmt.Errorf("%d resources, want %d", got.Len(), want.Len())
	}
	return nil
}

func sameConfig(got, want []snapshot.Resource) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range want { // both sorted by key (ListConfig)
		if got[i].Key != want[i].Key || got[i].Hash != want[i].Hash {
			return false
		}
	}
	return true
}

// readStore reads everything a (closed) store file holds.
func readStore(t *testing.T, path string) boltstoretest.Contents {
	t.Helper()
	st, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := boltstoretest.Contents{Snapshots: map[snapshot.Kind]map[string]*snapshot.Snapshot{}}
	for _, kind := range []snapshot.Kind{snapshot.Input, snapshot.Output} {
		if c.Snapshots[kind], err = st.List(t.Context(), kind); err != nil {
			t.Fatal(err)
		}
	}
	if c.Config, c.ConfigRev, err = st.ListConfig(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

// settledOutputs waits until the server and every agent agree on each cluster's output and
// returns its content hash per cluster.
func settledOutputs(t *testing.T, s *server, agents []*agent) map[string]string {
	t.Helper()
	var hashes map[string]string
	poll.Eventually(t, 30*time.Second, "server and agents settle", func() error {
		var err error
		hashes, err = outputsOf(t, s, agents)
		return err
	})
	return hashes
}

// outputsOf is each cluster's output hash when the server is out of safe mode, every
// cluster is in sync and each agent is connected and holds the server's output.
func outputsOf(t *testing.T, s *server, agents []*agent) (map[string]string, error) {
	st := s.status(t)
	if st.SafeMode.Active || len(st.Clusters) != len(agents) {
		return nil, fmt.Errorf("server: safe mode %v, %d clusters", st.SafeMode.Active, len(st.Clusters))
	}
	hashes := map[string]string{}
	for _, c := range st.Clusters {
		if !c.InSync || c.OutputHash == "" {
			return nil, fmt.Errorf("cluster %s not in sync (output v%d)", c.Name, c.OutputVersion)
		}
		hashes[c.Name] = c.OutputHash
	}
	for _, a := range agents {
		ast := a.status(t)
		if !ast.Connected || ast.OutputHash != hashes[a.cluster] {
			return nil, fmt.Errorf("agent %s: connected %v, output %s, server's %s", a.cluster, ast.Connected, ast.OutputHash, hashes[a.cluster])
		}
	}
	return hashes, nil
}

// rewriteStoreAs replaces the (closed) store file at path by one of the old schema holding
// c, as that version wrote it.
func rewriteStoreAs(t *testing.T, path, schema string, c boltstoretest.Contents) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := boltstoretest.WriteOld(path, schema, asWrittenBefore(t, c)); err != nil {
		t.Fatal(err)
	}
	if got := storeSchema(t, path); got != schema {
		t.Fatalf("rewritten store.db has schema %q, want %q", got, schema)
	}
}

// asWrittenBefore is c as the versions of schemas 1 and 2 held it: Envoy resources were
// JSON envelopes then, not protobuf (ADR 0014).
func asWrittenBefore(t *testing.T, c boltstoretest.Contents) boltstoretest.Contents {
	t.Helper()
	old := c
	old.Snapshots = map[snapshot.Kind]map[string]*snapshot.Snapshot{}
	for kind, snaps := range c.Snapshots {
		old.Snapshots[kind] = map[string]*snapshot.Snapshot{}
		for cluster, snap := range snaps {
			var rs []snapshot.Resource
			for _, r := range snap.Sorted() {
				if r.Binary() {
					body, err := envoyres.JSON(r)
					if err != nil {
						t.Fatalf("%s of %s: %v", r.Key, cluster, err)
					}
					r = snapshot.NewResource(r.Key, body)
				}
				rs = append(rs, r)
			}
			old.Snapshots[kind][cluster] = snapshot.New(snap.Version, snap.Epoch, rs)
		}
	}
	return old
}

// storeSchema reads the schema recorded in a closed store file.
func storeSchema(t *testing.T, path string) string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("meta")); b != nil {
			v = string(b.Get([]byte("schema")))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}
