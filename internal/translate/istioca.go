package translate

import (
	"bytes"
	"encoding/json"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Istio's plugged-in CA Secret (https://istio.io/latest/docs/tasks/security/cert-management/plugin-ca-cert/).
const (
	IstioCASecretNamespace = "istio-system"
	IstioCASecretName      = "cacerts"
	// IstioCASecretKey is the output resource key of the Secret.
	IstioCASecretKey = "Secret/" + IstioCASecretNamespace + "/" + IstioCASecretName
)

// IstioCA is a cluster's Istio workload CA: an intermediate of the mesh CA.
type IstioCA struct {
	CertPEM, KeyPEM, RootPEM, ChainPEM []byte
}

// equal reports whether a and b hold the same certificates and key.
func (a *IstioCA) equal(b *IstioCA) bool {
	return bytes.Equal(a.CertPEM, b.CertPEM) && bytes.Equal(a.KeyPEM, b.KeyPEM) &&
		bytes.Equal(a.RootPEM, b.RootPEM) && bytes.Equal(a.ChainPEM, b.ChainPEM)
}

// istioCASecret renders Istio's `cacerts` Secret: ca-cert.pem, ca-key.pem, root-cert.pem and
// cert-chain.pem (the intermediate, then up to the root).
func istioCASecret(ca IstioCA) snapshot.Resource {
	body, _ := json.Marshal(map[string]any{ // maps of strings and byte slices always marshal
		"apiVersion": "v1",
		"kind":       "Secret",
		"type":       "Opaque",
		"metadata":   map[string]any{"name": IstioCASecretName, "namespace": IstioCASecretNamespace},
		"data": map[string][]byte{
			"ca-cert.pem":    ca.CertPEM,
			"ca-key.pem":     ca.KeyPEM,
			"root-cert.pem":  ca.RootPEM,
			"cert-chain.pem": ca.ChainPEM,
		},
	})
	return snapshot.NewResource(IstioCASecretKey, body)
}
