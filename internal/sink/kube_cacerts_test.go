package sink

import (
	"bytes"
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// caOutput translates cluster east's output with the issuer's current bundle.
func caOutput(t *testing.T, issuer *pki.MeshIssuer, version uint64) (*snapshot.Snapshot, *pki.IstioCA) {
	t.Helper()
	config, errs := resource.Parse("clusters.yaml", []byte("apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: east\n"))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	b := issuer.Bundles([]string{"east"})["east"]
	if b.Istio == nil {
		t.Fatalf("no Istio CA issued: %v", issuer.IstioError())
	}
	ist := b.Istio
	res := translate.Translate(translate.Input{Config: config, Certs: map[string]translate.ClusterCert{"east": {CertPEM: b.CertPEM, KeyPEM: b.KeyPEM, CAPEM: b.CAPEM,
		Istio: &translate.IstioCA{CertPEM: ist.CertPEM, KeyPEM: ist.KeyPEM, RootPEM: ist.RootPEM, ChainPEM: ist.ChainPEM}}}})
	return out(version, 1, res.Outputs["east"]...), ist
}

// cacerts reads istio-system/cacerts and checks what Istio needs of it: the four keys,
// cert-chain.pem verifying ca-cert.pem up to root-cert.pem.
func cacerts(t *testing.T, c *istioCluster) (*corev1.Secret, *x509.Certificate) {
	t.Helper()
	s, err := c.cs.CoreV1().Secrets(IstioCASecretNamespace).Get(t.Context(), IstioCASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"} {
		if len(s.Data[k]) == 0 {
			t.Fatalf("cacerts lacks %s (has %v)", k, slices.Sorted(func(yield func(string) bool) {
				for k := range s.Data {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}
	leaf, err := pki.ParseCertPEM(s.Data["ca-cert.pem"])
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(s.Data["root-cert.pem"])
	inter.AppendCertsFromPEM(s.Data["cert-chain.pem"])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil || !leaf.IsCA {
		t.Fatalf("ca-cert.pem (CA %v) does not verify up to root-cert.pem with cert-chain.pem: %v", leaf.IsCA, err)
	}
	if first, _ := pki.ParseCertPEM(s.Data["cert-chain.pem"]); first == nil || !first.Equal(leaf) {
		t.Fatal("cert-chain.pem does not start with ca-cert.pem")
	}
	return s, leaf
}

// Istio's cacerts Secret against a real API server: created with the four keys from the
// mesh root (istio-system made for it), renewed before it expires with the same root, and a
// cacerts the user plugged in is never overwritten (a conflict, reported).
func TestKubeSinkIstioCACerts(t *testing.T) {
	c := startIstio(t)
	root, err := pki.NewMeshCA("mesh.example")
	if err != nil {
		t.Fatal(err)
	}
	issuer := pki.NewMeshIssuer(root, time.Hour)
	issuer.IssueIstioCAs(12 * time.Second) // renewed after 8 s
	reg := prometheus.NewRegistry()
	k := newKube(t, c, "east", reg)

	snap, ist := caOutput(t, issuer, 1)
	if err := k.Apply(t.Context(), snap); err != nil {
		t.Fatal(err)
	}
	s, first := cacerts(t, c)
	if !bytes.Equal(s.Data["root-cert.pem"], root.CertPEM) || !bytes.Equal(s.Data["ca-key.pem"], ist.KeyPEM) {
		t.Fatal("root-cert.pem is not the mesh CA, or ca-key.pem is not the issued key")
	}
	if s.Labels[LabelManagedBy] != ManagedBy || s.Labels[LabelCluster] != "east" {
		t.Fatalf("cacerts labels %v", s.Labels)
	}

	// Renewed at two thirds of its lifetime: a new ca-cert.pem, the same root, before the
	// old one expires.
	deadline := time.Now().Add(20 * time.Second)
	var renewed *snapshot.Snapshot
	for v := uint64(2); renewed == nil; v++ {
		if time.Now().After(deadline) {
			t.Fatal("the Istio CA was not renewed within 20 s")
		}
		next, ist2 := caOutput(t, issuer, v)
		if !bytes.Equal(ist2.CertPEM, ist.CertPEM) {
			renewed = next
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := k.Apply(t.Context(), renewed); err != nil {
		t.Fatal(err)
	}
	s2, second := cacerts(t, c)
	if second.Equal(first) || !bytes.Equal(s2.Data["root-cert.pem"], s.Data["root-cert.pem"]) {
		t.Fatal("cacerts not renewed with a new ca-cert.pem and the same root")
	}
	if !time.Now().Before(first.NotAfter) {
		t.Fatalf("renewed only after the old CA expired (%s)", first.NotAfter)
	}

	// Plugged in by the user: left alone, reported as a conflict.
	if err := c.cs.CoreV1().Secrets(IstioCASecretNamespace).Delete(t.Context(), IstioCASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	mine := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: IstioCASecretName, Namespace: IstioCASecretNamespace},
		Data: map[string][]byte{"ca-cert.pem": []byte("user's")}}
	if _, err := c.cs.CoreV1().Secrets(IstioCASecretNamespace).Create(t.Context(), mine, metav1.CreateOptions{FieldManager: "kubectl-create"}); err != nil {
		t.Fatal(err)
	}
	again, _ := caOutput(t, issuer, 100)
	var refused *RefusedError
	if err := k.Apply(t.Context(), again); !errors.As(err, &refused) || len(refused.Refusals) != 1 || refused.Refusals[0].Key != translate.IstioCASecretKey {
		t.Fatalf("apply next to the user's cacerts: %v, want it refused alone (acknowledged with the refusal, so check shows it)", err)
	}
	got, err := c.cs.CoreV1().Secrets(IstioCASecretNamespace).Get(t.Context(), IstioCASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data["ca-cert.pem"]) != "user's" || len(got.Data) != 1 {
		t.Fatal("the user's cacerts Secret was overwritten")
	}
	if st := k.Status(); !slices.Contains(st.Conflicts, "Secret/istio-system/cacerts") {
		t.Fatalf("conflicts %v, want the user's cacerts", st.Conflicts)
	}
	if v := metricValue(t, k.m.conflicts); v != 1 {
		t.Fatalf("meshrelay_sink_unowned_conflicts = %v, want 1", v)
	}
}
