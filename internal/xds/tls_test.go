package xds

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/pki/pkitest"
)

// meshSecrets returns the output's mesh Secrets of cluster issued by ca.
func meshSecrets(t *testing.T, ca *pki.CA, cluster string) (*tlsv3.Secret, *tlsv3.Secret) {
	t.Helper()
	cert, key, _, err := ca.IssueMesh(cluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	id := &tlsv3.Secret{Name: "meshrelay-mesh-identity", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(cert), PrivateKey: inline(key)}}}
	bundle := &tlsv3.Secret{Name: "meshrelay-mesh-ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(ca.CertPEM)}}}
	return id, bundle
}

// handshake runs a TLS handshake on loopback between the guard and a client presenting
// certs, and returns the server's error.
func handshake(t *testing.T, g *guard, certs ...tls.Certificate) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		cl := tls.Client(c, &tls.Config{InsecureSkipVerify: true, Certificates: certs, NextProtos: []string{"h2"}})
		if cl.Handshake() == nil {
			_, _ = cl.Write([]byte{1})
			_, _ = cl.Read(make([]byte, 1)) // until the server closes
		}
	}()
	defer func() { <-done }()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv := tls.Server(s, g.tlsConfig())
	if err := srv.Handshake(); err != nil {
		return err
	}
	_, err = io.ReadFull(srv, make([]byte, 1))
	return err
}

// TestGuard: no handshake before the identity arrives; then only the cluster's gateways
// from the CA of the output; an identity of another cluster is not used; a rotated CA in a
// new output is trusted from the next handshake on.
func TestGuard(t *testing.T) {
	ca := pkitest.CA(t, "example.org")
	reg := prometheus.NewRegistry()
	g := newGuard("east", reg, slog.New(slog.DiscardHandler))
	count := func(reason string) float64 { return counted(t, g, reason) }
	eastGW := pkitest.Gateway(t, ca, "east", "gw-a").TLS

	if err := handshake(t, g, eastGW); err == nil || count(ReasonNoIdentity) != 1 {
		t.Fatalf("before the identity: %v, no_identity %v", err, count(ReasonNoIdentity))
	}
	g.setIdentity(meshSecrets(t, ca, "west"))
	if _, problem := g.identityStatus(); !strings.Contains(problem, "not this cluster's identity") {
		t.Errorf("another cluster's identity: problem %q", problem)
	}
	g.setIdentity(meshSecrets(t, ca, "east"))
	if notAfter, problem := g.identityStatus(); notAfter.IsZero() || problem != "" {
		t.Fatalf("identity status %v %q", notAfter, problem)
	}
	if len(g.list()) != 0 {
		t.Errorf("no_identity refusals kept once the identity arrived: %+v", g.list())
	}

	other := pkitest.CA(t, "example.org")
	for _, c := range []struct {
		name   string
		certs  []tls.Certificate
		reason string
	}{
		{"the cluster's gateway", []tls.Certificate{eastGW}, ""},
		{"no certificate", nil, ReasonNoCertificate},
		{"another CA", []tls.Certificate{pkitest.Gateway(t, other, "east", "gw-a").TLS}, ReasonUntrusted},
		{"another cluster", []tls.Certificate{pkitest.Gateway(t, ca, "west", "gw-a").TLS}, ReasonForeignCluster},
	} {
		before := count(c.reason)
		err := handshake(t, g, c.certs...)
		if c.reason == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || count(c.reason) != before+1 {
			t.Errorf("%s: %v, %s counted %v times (was %v)", c.name, err, c.reason, count(c.reason), before)
		}
	}

	// The mesh CA rotates: the next output's bundle holds both CAs, then the new one only.
	both, _ := meshSecrets(t, ca, "east")
	_, bundle := meshSecrets(t, other, "east")
	bundle.GetValidationContext().GetTrustedCa().Specifier = &corev3.DataSource_InlineBytes{InlineBytes: append(append([]byte{}, ca.CertPEM...), other.CertPEM...)}
	g.setIdentity(both, bundle)
	if err := handshake(t, g, pkitest.Gateway(t, other, "east", "gw-a").TLS); err != nil {
		t.Errorf("a gateway of the new CA during the overlap: %v", err)
	}
	if err := handshake(t, g, eastGW); err != nil {
		t.Errorf("a gateway of the old CA during the overlap: %v", err)
	}
}

// TestGuardNode: a stream's first request must name the node of its certificate.
func TestGuardNode(t *testing.T) {
	g := newGuard("east", nil, slog.New(slog.DiscardHandler))
	k := streamKey{id: 1}
	g.streams[k] = streamPeer{id: "spiffe://example.org/cluster/east/gateway/gw-a", node: "gw-a"}
	if err := g.request(k, nil); err == nil {
		t.Error("a first request without a node is admitted")
	}
	if err := g.request(k, &corev3.Node{Id: "gw-b"}); err == nil || !strings.Contains(err.Error(), `"gw-b" is not the node "gw-a"`) {
		t.Errorf("another node: %v", err)
	}
	if err := g.request(k, &corev3.Node{Id: "gw-a"}); err != nil {
		t.Errorf("its node: %v", err)
	}
	if err := g.request(k, nil); err != nil {
		t.Errorf("a later request without a node: %v", err)
	}
	if err := g.request(streamKey{delta: true, id: 1}, &corev3.Node{Id: "x"}); err != nil {
		t.Errorf("an untracked stream (plaintext): %v", err)
	}
	if n := counted(t, g, ReasonNodeMismatch); n != 2 {
		t.Errorf("node_mismatch counted %v times, want 2", n)
	}
}

// counted is the value of meshrelay_xds_refused_total{reason}.
func counted(t *testing.T, g *guard, reason string) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.refused.WithLabelValues(reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
