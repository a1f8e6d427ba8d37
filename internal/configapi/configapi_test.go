package configapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/admin"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/pki/pkitest"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// backend is a fixed configuration and fixed snapshots.
type backend struct {
	config  []resource.Object
	inputs  map[string]*snapshot.Snapshot
	outputs map[string]*snapshot.Snapshot
}

func (b *backend) Apply(context.Context, []resource.Object) error { return nil }
func (b *backend) Delete(context.Context, string) error           { return snapshot.ErrNotFound }
func (b *backend) Config() []resource.Object                      { return b.config }
func (b *backend) Input(c string) *snapshot.Snapshot              { return b.inputs[c] }
func (b *backend) Output(c string) *snapshot.Snapshot             { return b.outputs[c] }
func (b *backend) ResourceStatus() map[string][]string            { return nil }

// serve runs the API over HTTPS with a certificate of a new CA and returns a client that
// trusts that CA.
func serve(t *testing.T, b configapi.Backend) *configapi.Client {
	t.Helper()
	ca := pkitest.CA(t, "test.local")
	addr := listen(t, b, serverTLS(t, ca))
	c, err := configapi.NewClient(addr, "tok", pkitest.CAFile(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serverTLS serves a certificate for 127.0.0.1 issued by ca.
func serverTLS(t *testing.T, ca *pki.CA) *tls.Config {
	t.Helper()
	return &tls.Config{Certificates: []tls.Certificate{pkitest.Server(t, ca, "127.0.0.1").TLS}}
}

// listen serves the API (HTTPS with tc, plain HTTP without) until the test ends.
func listen(t *testing.T, b configapi.Backend, tc *tls.Config) string {
	t.Helper()
	adm := admin.New("127.0.0.1:0", admin.Config{TLS: tc}, slog.New(slog.DiscardHandler))
	configapi.Register(adm, b, func() (string, error) { return "tok", nil }, nil)
	addr, err := adm.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- adm.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return addr
}

func mustParse(t *testing.T, source, yaml string) []resource.Object {
	t.Helper()
	objs, errs := resource.Parse(source, []byte(yaml))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return objs
}

const clusterYAML = "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: local\n"
const serviceYAML = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n    name: \"<http>\"\n"

// A snapshot read through the API keeps every body byte for byte, so its hashes verify; a
// body that does not match its hash is still refused.
func TestSnapshotRoundTrip(t *testing.T) {
	svc := mustParse(t, "in.yaml", serviceYAML)[0]
	good := snapshot.New(3, 0, []snapshot.Resource{svc.Resource()})
	bad := snapshot.FromMap(4, 0, map[string]snapshot.Resource{"Service/shop/web": {Key: "Service/shop/web", Hash: snapshot.HashBytes([]byte(`{"a":1}`)), Body: []byte(`{"a":2}`)}})
	c := serve(t, &backend{inputs: map[string]*snapshot.Snapshot{"local": good, "other": bad}})

	got, err := c.Snapshot(t.Context(), "local", snapshot.Input)
	if err != nil {
		t.Fatalf("read snapshot: %v", err)
	}
	if got.Hash != good.Hash || got.Version != 3 || string(got.Resources["Service/shop/web"].Body) != string(svc.Raw) {
		t.Errorf("read snapshot v%d %s, want v3 %s", got.Version, got.Hash, good.Hash)
	}
	if _, err := c.Snapshot(t.Context(), "other", snapshot.Input); !errors.Is(err, snapshot.ErrHashMismatch) {
		t.Errorf("a body that does not match its hash: err %v, want ErrHashMismatch", err)
	}
}

// Listing a kind includes what agents discovered, with the cluster; configuration items say
// where they come from.
func TestListIncludesDiscovered(t *testing.T) {
	cluster := mustParse(t, "/etc/config/clusters.yaml", clusterYAML)
	svc := mustParse(t, "discovered.yaml", serviceYAML)[0]
	c := serve(t, &backend{config: cluster, inputs: map[string]*snapshot.Snapshot{"local": snapshot.New(1, 0, []snapshot.Resource{svc.Resource()})}})
	items, err := c.List(t.Context(), "Service", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Key != "Service/shop/web" || items[0].Cluster != "local" || items[0].Source != configapi.SourceDiscovered {
		t.Fatalf("services: %+v", items)
	}
	items, err = c.List(t.Context(), "KubernetesCluster", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Source != "/etc/config/clusters.yaml" || items[0].Cluster != "" {
		t.Fatalf("clusters: %+v", items)
	}
}

// Deleting a resource of the config directory names its file instead of "not found".
func TestDeleteConfigDirResource(t *testing.T) {
	c := serve(t, &backend{config: mustParse(t, "/etc/config/clusters.yaml", clusterYAML)})
	err := c.Delete(t.Context(), "KubernetesCluster", "", "local")
	if err == nil || !strings.Contains(err.Error(), "config directory, file /etc/config/clusters.yaml") || strings.Contains(err.Error(), "not found") {
		t.Fatalf("delete: %v", err)
	}
	if err := c.Delete(t.Context(), "KubernetesCluster", "", "nosuch"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("delete of a missing resource: %v", err)
	}
}

// The client verifies the server: a certificate from another CA is refused with an error
// naming the server and the CA file, before any token is sent.
func TestClientRefusesCertificateOfAnotherCA(t *testing.T) {
	addr := listen(t, &backend{}, serverTLS(t, pkitest.CA(t, "test.local")))
	other := pkitest.CAFile(t, pkitest.CA(t, "test.local"))
	c, err := configapi.NewClient(addr, "tok", other)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(t.Context(), "", "")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("List against a server of another CA: %v, want an unknown authority error", err)
	}
	for _, want := range []string{"https://" + addr, other, "--admin-ca-file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// Plain HTTP is for loopback servers only; a TLS client meeting a plain HTTP server says so.
func TestClientPlainHTTP(t *testing.T) {
	for _, addr := range []string{"http://10.0.0.1:9901", "http://mgmt.example.com:9901", "http://[2001:db8::1]:9901", "ftp://127.0.0.1:1"} {
		if _, err := configapi.NewClient(addr, "tok", ""); err == nil {
			t.Errorf("NewClient(%q): no error, want a refusal", addr)
		}
	}
	addr := listen(t, &backend{config: mustParse(t, "a.yaml", clusterYAML)}, nil)
	c, err := configapi.NewClient("http://"+addr, "tok", "")
	if err != nil {
		t.Fatal(err)
	}
	if items, err := c.List(t.Context(), "", ""); err != nil || len(items) != 1 {
		t.Fatalf("List over plain HTTP on loopback: %v, %v", items, err)
	}
	tlsClient, err := configapi.NewClient(addr, "tok", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlsClient.List(t.Context(), "", ""); err == nil || !strings.Contains(err.Error(), "does not speak TLS") {
		t.Fatalf("HTTPS client against a plain HTTP server: %v", err)
	}
}

// A CA file that cannot be used is an error of its own (ErrCAFile), naming the file.
func TestClientCAFileErrors(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "garbage.crt")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(t.TempDir(), "missing.crt"), garbage} {
		_, err := configapi.NewClient("127.0.0.1:9901", "tok", f)
		if !errors.Is(err, configapi.ErrCAFile) || !strings.Contains(err.Error(), f) {
			t.Errorf("CA file %s: %v, want ErrCAFile naming the file", f, err)
		}
	}
	if _, err := configapi.NewClient("http://10.0.0.1:9901", "tok", ""); err == nil || errors.Is(err, configapi.ErrCAFile) {
		t.Errorf("a refused address: %v, want an error that is not ErrCAFile", err)
	}
}

// recorder counts what reaches the store.
type recorder struct {
	backend
	applied int
}

func (r *recorder) Apply(_ context.Context, objs []resource.Object) error {
	r.applied += len(objs)
	return nil
}

// An apply over the body or resource limit is refused whole, with the limit in words.
func TestApplyLimits(t *testing.T) {
	b := &recorder{}
	c := serve(t, b)
	var many strings.Builder
	for i := range 10_001 {
		fmt.Fprintf(&many, "apiVersion: v1\nkind: Service\nmetadata:\n  name: s%d\n  namespace: shop\n---\n", i)
	}
	huge := strings.Repeat("#", 17<<20)
	for _, tc := range []struct{ name, body, want string }{
		{"too many resources", many.String(), "many.yaml holds 10001 resources, over the limit of 10000 per request"},
		{"body too large", huge, "request body over the limit of 16 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.Apply(t.Context(), "many.yaml", []byte(tc.body))
			if err != nil || len(res.Errors) != 1 || !strings.Contains(res.Errors[0], tc.want) {
				t.Fatalf("apply: %+v, %v; want one error saying %q", res, err, tc.want)
			}
			if b.applied != 0 || len(res.Applied) != 0 {
				t.Fatalf("%d resources stored from a refused apply", b.applied)
			}
		})
	}
}
