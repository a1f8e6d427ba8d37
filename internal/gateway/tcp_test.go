package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshrelay/meshrelay/internal/gateway"
	gt "github.com/meshrelay/meshrelay/internal/gateway/gatewaytest"
)

// tcpSetup is a failover gateway (seed 003): a TCP listener terminating mTLS with the mesh
// identity and forwarding svc-a and svc-b by SNI to demo apps.
type tcpSetup struct {
	xds    *gt.XDS
	gw     *gateway.Gateway
	node   string
	addr   string
	pki    *gt.PKI
	static []types.Resource // everything but the identity secret
}

func newTCPSetup(t *testing.T) *tcpSetup {
	t.Helper()
	s := &tcpSetup{xds: gt.StartXDS(t, "127.0.0.1:0"), node: "gw-" + t.Name(), addr: gt.FreeAddr(t), pki: gt.NewPKI(t)}
	s.gw = gt.StartGateway(t, gateway.Config{XDSAddress: s.xds.Addr, NodeID: s.node})
	_, a, _ := gt.StartDemoApp(t, "a-pod")
	_, b, _ := gt.StartDemoApp(t, "b-pod")
	s.static = []types.Resource{
		gt.TCPGateway(t, "failover", s.addr, "mesh-identity", "mesh-ca", "svc-a", "svc-b"),
		gt.Cluster(t, "svc-a", gt.ClusterOptions{}), gt.LoadAssignment(t, "svc-a", []gt.Endpoint{{Addr: a}}),
		gt.Cluster(t, "svc-b", gt.ClusterOptions{}), gt.LoadAssignment(t, "svc-b", []gt.Endpoint{{Addr: b}}),
		gt.CASecret("mesh-ca", s.pki.CA.CertPEM),
	}
	s.setIdentity(t)
	return s
}

// setIdentity serves a newly issued serving certificate and waits until it is acked.
func (s *tcpSetup) setIdentity(t *testing.T) {
	t.Helper()
	cert, key := s.pki.Mesh(t, "remote")
	secret := gt.CertSecret("mesh-identity", cert, key)
	s.xds.Set(t, s.node, append(s.static, secret)...)
	s.xds.WaitAcked(t, s.node, resourcev3.SecretType, gt.CASecret("mesh-ca", s.pki.CA.CertPEM), secret)
}

func (s *tcpSetup) client(conf *tls.Config) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: false,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
}

// get sends GET / over TLS and returns the body or the error.
func (s *tcpSetup) get(conf *tls.Config) (string, error) {
	c := s.client(conf)
	defer c.CloseIdleConnections()
	code, body, err := gt.Get(c, "https://"+s.addr+"/")
	if err != nil {
		return "", err
	}
	if code != 200 {
		return "", fmt.Errorf("status %d", code)
	}
	return body, nil
}

func TestTCPGatewayMutualTLSBySNI(t *testing.T) {
	s := newTCPSetup(t)
	gt.Eventually(t, 10*time.Second, func() error {
		_, err := s.get(s.pki.ClientTLS(t, "local", "svc-a"))
		return err
	})
	for sni, want := range map[string]string{"svc-a": "a-pod", "svc-b": "b-pod", "SVC-B": "b-pod"} {
		if got, err := s.get(s.pki.ClientTLS(t, "local", sni)); err != nil || got != want {
			t.Errorf("sni %s: %q %v, want %q", sni, got, err, want)
		}
	}

	other := gt.NewPKI(t) // a client certificate from another CA
	noCert := s.pki.ClientTLS(t, "local", "svc-a")
	noCert.Certificates = nil
	for name, conf := range map[string]*tls.Config{
		"unknown sni":             s.pki.ClientTLS(t, "local", "svc-c"),
		"no sni":                  s.pki.ClientTLS(t, "local", ""),
		"client cert of other ca": other.ClientTLS(t, "local", "svc-a"),
		"no client cert":          noCert,
	} {
		if got, err := s.get(conf); err == nil {
			t.Errorf("%s: answered %q, want refused", name, got)
		}
	}

	// A plaintext connection is refused: no answer, the connection is closed.
	conn, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: svc-a\r\n\r\n")
	if b, err := io.ReadAll(conn); len(b) > 0 || err != nil {
		t.Errorf("plaintext connection: read %q, %v; want the connection closed without an answer", b, err)
	}

	st := s.gw.Status()
	if len(st.Listeners) != 1 || st.Listeners[0].Kind != "tcp" || len(st.Listeners[0].FilterChains) != 2 {
		t.Errorf("listener status: %+v", st.Listeners)
	}
}

func TestTCPGatewayCertificateRotation(t *testing.T) {
	s := newTCPSetup(t)
	conf := s.pki.ClientTLS(t, "local", "svc-a")
	var serial *big.Int
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		serial = cs.PeerCertificates[0].SerialNumber
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: s.pki.CA.Pool()})
		return err
	}
	c := s.client(conf)
	defer c.CloseIdleConnections()
	gt.WantBody(t, c, "https://"+s.addr+"/", "a-pod", 10*time.Second)
	before := serial

	s.setIdentity(t) // rotate the serving certificate

	// The established connection goes on.
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", "https://"+s.addr+"/", nil)
	code, body := do(t, c, req)
	if !reused || code != 200 || body != "a-pod" {
		t.Errorf("existing connection after rotation: reused %v, %d %q", reused, code, body)
	}
	// New handshakes present the new certificate.
	c2 := s.client(conf)
	defer c2.CloseIdleConnections()
	gt.WantBody(t, c2, "https://"+s.addr+"/", "a-pod", 5*time.Second)
	if serial.Cmp(before) == 0 {
		t.Errorf("new connection got the old certificate (serial %v)", serial)
	}
	if !strings.Contains(fmt.Sprint(s.gw.Status().Secrets), "mesh-identity") {
		t.Errorf("secrets status: %+v", s.gw.Status().Secrets)
	}
}

// TestUpstreamTLSVerifiesServer sends an HTTP listener's traffic over mTLS with SNI to the
// TCP gateway: it works when the validation secret holds the gateway's CA and fails (503,
// connection failure) when it holds another CA.
func TestUpstreamTLSVerifiesServer(t *testing.T) {
	remote := newTCPSetup(t)
	local := newHTTPSetup(t)
	cert, key := remote.pki.Mesh(t, "local")
	local.xds.Set(t, local.node, gt.HTTPListener(t, "http", local.listen),
		gt.RouteConfig("http", gt.PrefixRoute("/good", "good"), gt.PrefixRoute("/bad", "bad")),
		gt.Cluster(t, "good", gt.ClusterOptions{TLS: []gt.UpstreamTLS{{SNI: "svc-b", CertSecret: "id", CASecret: "ca"}}}),
		gt.LoadAssignment(t, "good", []gt.Endpoint{{Addr: remote.addr, SNI: "svc-b"}}),
		gt.Cluster(t, "bad", gt.ClusterOptions{TLS: []gt.UpstreamTLS{{SNI: "svc-b", CertSecret: "id", CASecret: "other-ca"}}}),
		gt.LoadAssignment(t, "bad", []gt.Endpoint{{Addr: remote.addr, SNI: "svc-b"}}),
		gt.CertSecret("id", cert, key), gt.CASecret("ca", remote.pki.CA.CertPEM), gt.CASecret("other-ca", gt.NewPKI(t).CA.CertPEM))
	c := gt.Client(t)
	gt.WantBody(t, c, local.url+"/good", "b-pod", 10*time.Second)
	code, body, err := gt.Get(c, local.url+"/bad")
	if err != nil || code != 503 || !strings.Contains(body, "connection failure") {
		t.Errorf("server certificate of another CA: %d %q %v, want 503 connection failure", code, body, err)
	}
}
