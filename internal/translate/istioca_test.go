package translate_test

import (
	"bytes"
	"encoding/base64"
	"maps"
	"slices"
	"testing"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// A cluster's Istio `cacerts` Secret follows its Istio CA through incremental translations:
// rendered when the CA first appears, kept (the same body) while the CA is unchanged, and
// rendered anew as soon as one of its certificates or its key changes.
func TestIstioCASecretFollowsItsCA(t *testing.T) {
	in := loadCase(t, "istio-multinetwork")
	clusters := slices.Sorted(maps.Keys(in.Certs))
	ca := func(gen string) map[string]translate.ClusterCert {
		certs := map[string]translate.ClusterCert{}
		for c, cert := range in.Certs {
			cert.Istio = &translate.IstioCA{CertPEM: []byte(c + "-cert-" + gen), KeyPEM: []byte(c + "-key-" + gen),
				RootPEM: []byte("root"), ChainPEM: []byte(c + "-chain-" + gen)}
			certs[c] = cert
		}
		return certs
	}
	tr := translate.NewTranslator()
	secret := func(res translate.Result, c string) snapshot.Resource {
		for _, r := range res.Outputs[c] {
			if r.Key == translate.IstioCASecretKey {
				return r
			}
		}
		t.Fatalf("cluster %s: no %s", c, translate.IstioCASecretKey)
		return snapshot.Resource{}
	}
	check := func(step string, in translate.Input) translate.Result {
		t.Helper()
		inc, fresh := tr.Translate(in), translate.Translate(in)
		if d := ptDiff(fresh, inc); d != "" {
			t.Fatalf("%s: incremental differs from fresh: %s", step, d)
		}
		return inc
	}
	in.Certs = ca("1")
	first := check("first CA", in)
	in.Certs = ca("1") // the same CA in new byte slices
	again := check("same CA", in)
	for _, c := range clusters {
		if secret(again, c).Hash != secret(first, c).Hash {
			t.Fatalf("cluster %s: the Secret changed with the same CA", c)
		}
	}
	in.Certs = ca("1")
	changed := in.Certs[clusters[0]]
	changed.Istio.KeyPEM = []byte("another key") // only the key
	in.Certs[clusters[0]] = changed
	next := check("new key in one cluster", in)
	if secret(next, clusters[0]).Hash == secret(first, clusters[0]).Hash {
		t.Fatalf("cluster %s: the Secret did not follow its new key", clusters[0])
	}
	if !bytes.Contains(secret(next, clusters[0]).Body, []byte(base64.StdEncoding.EncodeToString([]byte("another key")))) {
		t.Fatalf("cluster %s: the Secret lacks the new key: %s", clusters[0], secret(next, clusters[0]).Body)
	}
	in.Certs = ca("2")
	check("new CA everywhere", in)
}
