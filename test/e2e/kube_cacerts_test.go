package e2e

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// cacertsOf reads istio-system/cacerts and checks what Istio needs of it against root: the
// four keys, ca-cert.pem a CA verifying up to root-cert.pem (the mesh CA) with cert-chain.pem.
func cacertsOf(t *testing.T, c *kubeCluster, root *pki.CA) (*x509.Certificate, error) {
	s, err := c.cs.CoreV1().Secrets("istio-system").Get(t.Context(), "cacerts", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"} {
		if len(s.Data[k]) == 0 {
			return nil, fmt.Errorf("cacerts lacks %s", k)
		}
	}
	if !bytes.Equal(s.Data["root-cert.pem"], root.CertPEM) {
		return nil, fmt.Errorf("root-cert.pem is not the server's mesh CA")
	}
	leaf, err := pki.ParseCertPEM(s.Data["ca-cert.pem"])
	if err != nil {
		return nil, err
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(s.Data["root-cert.pem"])
	inter.AppendCertsFromPEM(s.Data["cert-chain.pem"])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil || !leaf.IsCA {
		return nil, fmt.Errorf("ca-cert.pem (CA %v) does not verify up to root-cert.pem: %v", leaf.IsCA, err)
	}
	return leaf, nil
}

// A Kubernetes-mode agent writes Istio's cacerts from the management server's mesh root,
// and it is renewed before it expires; a cacerts the user plugged in is left alone and
// `meshrelay check` says so.
func TestKubeIstioCACerts(t *testing.T) {
	h := newHarness(t)
	c := startKubeCluster(t)
	s := h.startServer("server", []string{"kube-a"}, "--istio-ca-ttl", "15s")
	h.startKubeAgent("kube-a", s, c.env.Kubeconfig, "--kube-resync", "1s")
	root, err := pki.LoadCA(filepath.Join(s.dataDir, "mesh-ca.crt"), filepath.Join(s.dataDir, "mesh-ca.key"), "meshrelay.local")
	if err != nil {
		t.Fatal(err)
	}
	var first *x509.Certificate
	poll.Eventually(t, 60*time.Second, "cacerts written by the agent", func() (err error) {
		first, err = cacertsOf(t, c, root)
		return err
	})
	poll.Eventually(t, 20*time.Second, "cacerts renewed", func() error {
		cur, err := cacertsOf(t, c, root)
		if err != nil {
			return err
		}
		if cur.Equal(first) {
			return fmt.Errorf("ca-cert.pem still the first (expires %s)", first.NotAfter.Format(time.RFC3339))
		}
		return nil
	})
	if !time.Now().Before(first.NotAfter) {
		t.Fatalf("cacerts renewed only after the previous CA expired (%s)", first.NotAfter)
	}

	// The user plugs in their own: left alone through renewals, and check names it.
	if err := c.cs.CoreV1().Secrets("istio-system").Delete(t.Context(), "cacerts", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	mine := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts", Namespace: "istio-system"}, Data: map[string][]byte{"ca-cert.pem": []byte("user's")}}
	if _, err := c.cs.CoreV1().Secrets("istio-system").Create(t.Context(), mine, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 30*time.Second, "check reports the user's cacerts", func() error {
		out, _, _ := cli(t, "check", "--server", s.admin)
		if !strings.Contains(out, "Secret/istio-system/cacerts") || !strings.Contains(out, "not created by meshrelay") {
			return fmt.Errorf("check:\n%s", out)
		}
		return nil
	})
	time.Sleep(11 * time.Second) // past the next renewal
	got, err := c.cs.CoreV1().Secrets("istio-system").Get(t.Context(), "cacerts", metav1.GetOptions{})
	if err != nil || string(got.Data["ca-cert.pem"]) != "user's" || len(got.Data) != 1 {
		t.Fatalf("the user's cacerts was overwritten: %v %v", err, got.Data)
	}
}
