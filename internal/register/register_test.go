package register_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/register"
)

const ns = register.DefaultNamespace

// serverSecrets creates the Secrets the meshrelay-server chart makes in the management
// cluster: the token, and the relay CA with its key.
func serverSecrets(t *testing.T, mgmt client.Client) (token string, caPEM []byte) {
	t.Helper()
	ca, err := pki.NewCA("meshrelay.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	token = "s3cr3t-token"
	ctx := t.Context()
	if err := mgmt.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: register.DefaultTokenSecret}, Data: map[string][]byte{"token": []byte(token + "\n")}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: register.DefaultCASecret},
			Data: map[string][]byte{"tls.crt": ca.CertPEM, "tls.key": keyPEM, "ca.crt": ca.CertPEM}},
	} {
		if err := mgmt.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return token, ca.CertPEM
}

// inventory names every Secret, Namespace and KubernetesCluster of an API server, to check
// that register and deregister change exactly what they say.
func inventory(t *testing.T, c client.Client, crds bool) []string {
	t.Helper()
	var out []string
	var secrets corev1.SecretList
	if err := c.List(t.Context(), &secrets); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		out = append(out, "Secret "+s.Namespace+"/"+s.Name)
	}
	var nss corev1.NamespaceList
	if err := c.List(t.Context(), &nss); err != nil {
		t.Fatal(err)
	}
	for _, n := range nss.Items {
		out = append(out, "Namespace "+n.Name)
	}
	if crds {
		var kcs kubev1alpha1.KubernetesClusterList
		if err := c.List(t.Context(), &kcs); err != nil {
			t.Fatal(err)
		}
		for _, k := range kcs.Items {
			out = append(out, "KubernetesCluster "+k.Name)
		}
	}
	slices.Sort(out)
	return out
}

func diff(before, after []string) (added, removed []string) {
	for _, a := range after {
		if !slices.Contains(before, a) {
			added = append(added, a)
		}
	}
	for _, b := range before {
		if !slices.Contains(after, b) {
			removed = append(removed, b)
		}
	}
	return added, removed
}

func actions(changes []register.Change) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Where+" "+c.Object+" "+c.Action)
	}
	return out
}

func TestRegisterDeregister(t *testing.T) {
	mgmt := kubetest.Start(t)
	remote := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	token, caPEM := serverSecrets(t, mgmt.Client)
	ctx := t.Context()
	cfg := register.Config{Cluster: "east", ClusterDomain: "cluster.local"}

	mgmtBefore, remoteBefore := inventory(t, mgmt.Client, true), inventory(t, remote.Client, false)
	changes, err := register.Register(ctx, mgmt.Client, remote.Client, cfg)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	want := []string{
		"workload Namespace meshrelay-system created",
		"workload Secret meshrelay-system/meshrelay-relay-token created",
		"workload Secret meshrelay-system/meshrelay-relay-ca created",
		"management KubernetesCluster east created",
	}
	if got := actions(changes); !slices.Equal(got, want) {
		t.Errorf("register:\n got %q\nwant %q", got, want)
	}
	added, removed := diff(mgmtBefore, inventory(t, mgmt.Client, true))
	if !slices.Equal(added, []string{"KubernetesCluster east"}) || len(removed) > 0 {
		t.Errorf("management cluster: added %q, removed %q; want only KubernetesCluster east added", added, removed)
	}
	added, removed = diff(remoteBefore, inventory(t, remote.Client, false))
	if !slices.Equal(added, []string{"Namespace meshrelay-system", "Secret meshrelay-system/meshrelay-relay-ca", "Secret meshrelay-system/meshrelay-relay-token"}) || len(removed) > 0 {
		t.Errorf("workload cluster: added %q, removed %q", added, removed)
	}

	// What was copied: the token and the CA certificate, never the CA's key.
	var tok, ca corev1.Secret
	if err := remote.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: register.DefaultTokenSecret}, &tok); err != nil {
		t.Fatal(err)
	}
	if err := remote.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: register.DefaultCASecret}, &ca); err != nil {
		t.Fatal(err)
	}
	if string(tok.Data["token"]) != token || len(tok.Data) != 1 {
		t.Errorf("token Secret data %q, want only token=%q", tok.Data, token)
	}
	if string(ca.Data["ca.crt"]) != string(caPEM) || len(ca.Data) != 1 {
		t.Errorf("CA Secret has keys %v, want only ca.crt with the CA certificate", keys(ca.Data))
	}
	var kc kubev1alpha1.KubernetesCluster
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Name: "east"}, &kc); err != nil {
		t.Fatal(err)
	}
	if kc.Spec.ClusterDomain != "cluster.local" || kc.Labels[register.LabelManagedBy] != register.ManagedBy || kc.Labels[register.LabelCluster] != "east" {
		t.Errorf("KubernetesCluster: spec %+v labels %v", kc.Spec, kc.Labels)
	}

	// Idempotent: a second run changes nothing, not even a resourceVersion.
	rv := map[string]string{"kc": kc.ResourceVersion, "tok": tok.ResourceVersion, "ca": ca.ResourceVersion}
	changes, err = register.Register(ctx, mgmt.Client, remote.Client, cfg)
	if err != nil {
		t.Fatalf("register again: %v", err)
	}
	for _, c := range changes {
		if c.Action != register.Unchanged {
			t.Errorf("register again: %s", c)
		}
	}
	_ = mgmt.Client.Get(ctx, client.ObjectKey{Name: "east"}, &kc)
	_ = remote.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: register.DefaultTokenSecret}, &tok)
	_ = remote.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: register.DefaultCASecret}, &ca)
	if kc.ResourceVersion != rv["kc"] || tok.ResourceVersion != rv["tok"] || ca.ResourceVersion != rv["ca"] {
		t.Errorf("register again wrote objects")
	}

	// A rotated token is repaired on the next run.
	tok.Data["token"] = []byte("stale")
	if err := remote.Client.Update(ctx, &tok); err != nil {
		t.Fatal(err)
	}
	changes, err = register.Register(ctx, mgmt.Client, remote.Client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(changes)[1]; got != "workload Secret meshrelay-system/meshrelay-relay-token updated" {
		t.Errorf("after a token drift: %s", got)
	}

	// Deregister removes exactly what register created (the namespace stays).
	changes, err = register.Deregister(ctx, mgmt.Client, remote.Client, cfg)
	if err != nil {
		t.Fatalf("deregister: %v", err)
	}
	want = []string{
		"management KubernetesCluster east deleted",
		"workload Secret meshrelay-system/meshrelay-relay-token deleted",
		"workload Secret meshrelay-system/meshrelay-relay-ca deleted",
	}
	if got := actions(changes); !slices.Equal(got, want) {
		t.Errorf("deregister:\n got %q\nwant %q", got, want)
	}
	if got := inventory(t, mgmt.Client, true); !slices.Equal(got, mgmtBefore) {
		added, removed := diff(mgmtBefore, got)
		t.Errorf("management cluster after deregister: added %q, removed %q", added, removed)
	}
	added, removed = diff(remoteBefore, inventory(t, remote.Client, false))
	if !slices.Equal(added, []string{"Namespace meshrelay-system"}) || len(removed) > 0 {
		t.Errorf("workload cluster after deregister: added %q, removed %q; want only the namespace left", added, removed)
	}
	changes, err = register.Deregister(ctx, mgmt.Client, remote.Client, cfg)
	if err != nil {
		t.Fatalf("deregister again: %v", err)
	}
	for _, c := range changes {
		if c.Action != register.Absent {
			t.Errorf("deregister again: %s", c)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestRegisterForeignObjects: objects register did not create are used but never changed
// or deleted; one holding other data is a clear error.
func TestRegisterForeignObjects(t *testing.T) {
	mgmt := kubetest.Start(t)
	remote := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	ctx := t.Context()
	dir := t.TempDir()
	ca, err := pki.NewCA("meshrelay.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile, caFile := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(tokenFile, []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := register.Config{Cluster: "west", TokenFile: tokenFile, RelayCAFile: caFile}

	// A KubernetesCluster applied by hand, and the token Secret created by hand with the same
	// token.
	if err := mgmt.Client.Create(ctx, &kubev1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Name: "west"}}); err != nil {
		t.Fatal(err)
	}
	if err := remote.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := remote.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: register.DefaultTokenSecret},
		Data: map[string][]byte{"token": []byte("file-token")}}); err != nil {
		t.Fatal(err)
	}
	changes, err := register.Register(ctx, mgmt.Client, remote.Client, cfg)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	want := []string{
		"workload Namespace meshrelay-system unchanged",
		"workload Secret meshrelay-system/meshrelay-relay-token " + register.Kept,
		"workload Secret meshrelay-system/meshrelay-relay-ca created",
		"management KubernetesCluster west " + register.Kept,
	}
	if got := actions(changes); !slices.Equal(got, want) {
		t.Errorf("register:\n got %q\nwant %q", got, want)
	}
	changes, err = register.Deregister(ctx, mgmt.Client, remote.Client, cfg)
	if err != nil {
		t.Fatalf("deregister: %v", err)
	}
	want = []string{
		"management KubernetesCluster west " + register.Kept,
		"workload Secret meshrelay-system/meshrelay-relay-token " + register.Kept,
		"workload Secret meshrelay-system/meshrelay-relay-ca deleted",
	}
	if got := actions(changes); !slices.Equal(got, want) {
		t.Errorf("deregister:\n got %q\nwant %q", got, want)
	}
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Name: "west"}, &kubev1alpha1.KubernetesCluster{}); err != nil {
		t.Errorf("the hand-made KubernetesCluster is gone: %v", err)
	}

	// A hand-made Secret with another token: an error naming it, and nothing written.
	if err := os.WriteFile(tokenFile, []byte("another-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = register.Register(ctx, mgmt.Client, remote.Client, cfg)
	if !errors.Is(err, register.ErrConflict) || !strings.Contains(err.Error(), "meshrelay-system/meshrelay-relay-token") {
		t.Errorf("register over a foreign Secret with other data: %v, want ErrConflict naming it", err)
	}

	// A bundle with a private key never travels.
	der, _ := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err := os.WriteFile(caFile, append(ca.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := register.Register(ctx, mgmt.Client, remote.Client, cfg); err == nil || !strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("register with a private key in the bundle: %v, want a refusal", err)
	}

	// No server Secrets and no files: a clear error.
	_, err = register.Register(ctx, mgmt.Client, remote.Client, register.Config{Cluster: "north"})
	if err == nil || !strings.Contains(err.Error(), "Secret meshrelay-system/meshrelay-relay-token not found in the management cluster") {
		t.Errorf("register without token: %v", err)
	}
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Name: "north"}, &kubev1alpha1.KubernetesCluster{}); err == nil {
		t.Errorf("a failed register created the KubernetesCluster")
	}
}

// TestRegisterNoCRDs: a management cluster without meshrelay's CRDs is a clear error.
func TestRegisterNoCRDs(t *testing.T) {
	remote := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	dir := t.TempDir()
	ca, err := pki.NewCA("meshrelay.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile, caFile := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	_ = os.WriteFile(tokenFile, []byte("t"), 0o600)
	_ = os.WriteFile(caFile, ca.CertPEM, 0o600)
	cfg := register.Config{Cluster: "east", TokenFile: tokenFile, RelayCAFile: caFile}
	// The same API server plays both clusters: it has no meshrelay CRDs.
	_, err = register.Register(t.Context(), remote.Client, remote.Client, cfg)
	if !errors.Is(err, register.ErrNoCRDs) {
		t.Errorf("register: %v, want ErrNoCRDs", err)
	}
}

// TestInstall installs the agent chart with the helm binary into a real API server, upgrades
// it on a second run and uninstalls it.
func TestInstall(t *testing.T) {
	kubetest.UseHelm(t)
	remote := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	// The agent writes Istio's cacerts into istio-system, which must exist before the install
	// (Istio wants cacerts before istiod starts: namespace, agent, then Istio).
	if err := remote.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}); err != nil {
		t.Fatal(err)
	}
	cfg := register.Config{Cluster: "east"}
	h := register.Helm{Kubeconfig: remote.Kubeconfig, RelayAddress: "mgmt.example.com:9900", Set: []string{"image.tag=test"}}
	rev, err := register.Install(t.Context(), cfg, h)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	if rev != 1 {
		t.Errorf("revision %d, want 1", rev)
	}
	var deps appsv1.DeploymentList
	if err := remote.Client.List(t.Context(), &deps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 1 {
		t.Fatalf("%d Deployments in %s, want the agent's", len(deps.Items), ns)
	}
	d := deps.Items[0]
	args := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--cluster=east") || !strings.Contains(args, "mgmt.example.com:9900") {
		t.Errorf("agent args %q lack the cluster and relay address", args)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":test") {
		t.Errorf("image %q: --set image.tag=test not applied", img)
	}
	if rev, err = register.Install(t.Context(), cfg, h); err != nil || rev != 2 {
		t.Errorf("install again: revision %d, %v; want an upgrade to 2", rev, err)
	}
	done, err := register.Uninstall(t.Context(), cfg, h)
	if err != nil || !done {
		t.Fatalf("uninstall: %v, %v", done, err)
	}
	if err := remote.Client.Get(t.Context(), client.ObjectKeyFromObject(&d), &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("the agent's Deployment after uninstall: %v", err)
	}
	if done, err := register.Uninstall(t.Context(), cfg, h); err != nil || done {
		t.Errorf("uninstall again: %v, %v; want nothing to do", done, err)
	}
	if _, err := register.Install(t.Context(), cfg, register.Helm{Kubeconfig: remote.Kubeconfig}); err == nil {
		t.Errorf("install without a relay address succeeded")
	}
}

// TestInstallWithoutHelm: without helm on PATH, Install refuses before touching the cluster,
// with ErrNoHelm and the helm command to run instead; Uninstall says what to run too.
func TestInstallWithoutHelm(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	cfg := register.Config{Cluster: "east"}
	h := register.Helm{Kubeconfig: "/nonexistent/kubeconfig", Context: "east ctx", RelayAddress: "mgmt.example.com:9900", Set: []string{"image.tag=0.1.0"}}
	_, err := register.Install(t.Context(), cfg, h)
	if !errors.Is(err, register.ErrNoHelm) {
		t.Fatalf("install without helm: %v, want ErrNoHelm", err)
	}
	want := "helm upgrade --install meshrelay-agent ./charts/meshrelay-agent --namespace meshrelay-system --create-namespace " +
		"--kubeconfig /nonexistent/kubeconfig --kube-context 'east ctx' --set cluster=east --set relay.address=mgmt.example.com:9900 --set image.tag=0.1.0"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "install helm") {
		t.Errorf("install without helm: %v\nwant the command %s", err, want)
	}
	if _, err := register.Uninstall(t.Context(), cfg, h); err == nil ||
		!strings.Contains(err.Error(), "helm uninstall meshrelay-agent --namespace meshrelay-system --kubeconfig /nonexistent/kubeconfig --kube-context 'east ctx'") {
		t.Errorf("uninstall without helm: %v, want the helm command", err)
	}
}

func TestHelmCommand(t *testing.T) {
	cfg := register.Config{Cluster: "east"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	got := register.HelmCommand(cfg, "mgmt.example.com:9900", "meshrelay-agent", "./charts/meshrelay-agent", "", "east ctx", []string{"image.tag=0.1.0"})
	want := "helm upgrade --install meshrelay-agent ./charts/meshrelay-agent --namespace meshrelay-system --create-namespace --kube-context 'east ctx' " +
		"--set cluster=east --set relay.address=mgmt.example.com:9900 --set image.tag=0.1.0"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  register.Config
		want string
	}{
		{register.Config{}, "--cluster is required"},
		{register.Config{Cluster: "East"}, "DNS label"},
		{register.Config{Cluster: "east", Namespace: "Bad_NS"}, "--namespace"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
