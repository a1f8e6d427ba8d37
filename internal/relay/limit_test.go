package relay_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/relaywire"
)

// clientFrom dials the server from the loopback address ip, with the agents' call options.
func (e *env) clientFrom(t *testing.T, ip string, cert *tls.Certificate) relayv1.RelayServiceClient {
	t.Helper()
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: e.ca.Pool(), ServerName: "127.0.0.1"}
	if cert != nil {
		tcfg.Certificates = []tls.Certificate{*cert}
	}
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := grpc.NewClient("passthrough:///"+e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tcfg)), relaywire.CallOptions(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return relayv1.NewRelayServiceClient(conn)
}

// registerReq is a registration of cluster with token tok, and the key of its CSR.
func registerReq(t *testing.T, cluster, tok string) (*relayv1.RegisterRequest, crypto.Signer) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, cluster)
	if err != nil {
		t.Fatal(err)
	}
	return &relayv1.RegisterRequest{Token: tok, Cluster: cluster, CsrPem: csr}, key
}

// request is registerReq without the key.
func request(t *testing.T, cluster, tok string) *relayv1.RegisterRequest {
	req, _ := registerReq(t, cluster, tok)
	return req
}

// A source that keeps presenting a bad token is refused cheaply after its budget, while
// another source registers as usual.
func TestBadTokensRateLimitedPerSource(t *testing.T) {
	e := newEnv(t, relay.ServerConfig{}, newBackend("east", "west"))
	flood := e.clientFrom(t, "127.0.0.2", nil)
	req := request(t, "east", "wrong-token")
	var unauthenticated, limited int
	for range 40 {
		_, err := flood.Register(t.Context(), req)
		switch status.Code(err) {
		case codes.Unauthenticated:
			unauthenticated++
		case codes.ResourceExhausted:
			limited++
			if !strings.Contains(err.Error(), "too many failed attempts from 127.0.0.2") {
				t.Fatalf("refusal does not say why: %v", err)
			}
		default:
			t.Fatalf("bad token: %v", err)
		}
	}
	// The burst is 20 failures, refilled at one a second: a slow test may see one or two more.
	if unauthenticated < 20 || unauthenticated > 23 || limited == 0 {
		t.Fatalf("bad tokens: %d refused for the token, %d rate limited; want the first 20 or so checked and the rest limited", unauthenticated, limited)
	}
	// Even the right token is refused from the flooding source until its budget refills...
	if _, err := flood.Register(t.Context(), request(t, "east", token)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("good token from the flooding source: %v, want ResourceExhausted", err)
	}
	// ...but not from another source.
	if _, err := e.clientFrom(t, "127.0.0.3", nil).Register(t.Context(), request(t, "west", token)); err != nil {
		t.Fatalf("registration from another source: %v", err)
	}
	got := e.server.RateLimited()
	if len(got) != 1 || got[0].Source != "127.0.0.2" || got[0].Refused != uint64(limited+1) {
		t.Fatalf("RateLimited() = %+v, want 127.0.0.2 with %d refusals", got, limited+1)
	}
}

// Valid registrations are bounded per cluster (each costs a signature); other clusters are
// not affected.
func TestRegistrationsRateLimitedPerCluster(t *testing.T) {
	e := newEnv(t, relay.ServerConfig{}, newBackend("east", "west"))
	c := e.clientFrom(t, "127.0.0.4", nil)
	ok := 0
	var err error
	for range 12 {
		if _, err = c.Register(t.Context(), request(t, "east", token)); err != nil {
			break
		}
		ok++
	}
	if ok != 10 || status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), `too many registrations of cluster "east"`) {
		t.Fatalf("%d registrations of east passed, then %v; want 10, then ResourceExhausted naming the cluster", ok, err)
	}
	if _, err := c.Register(t.Context(), request(t, "west", token)); err != nil {
		t.Fatalf("west after east's limit: %v", err)
	}
}

// An output over the message limit is not sent: the agent is told why, in words.
func TestOutputOverMessageLimitRefusedClearly(t *testing.T) {
	b := newBackend("east")
	b.setOutput("east", output(1, "big="+`"`+strings.Repeat("x", 100<<10)+`"`))
	e := newEnv(t, relay.ServerConfig{MaxMessageBytes: 64 << 10}, b)
	cert := e.register(t, "east")
	p := pull(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east", Held: &relayv1.Held{}})
	err := streamError(t, p.in)
	wantCode(t, err, codes.ResourceExhausted, "output of cluster east is", "over the limit of 61440 bytes")
}

// An output larger than gRPC's default limit of 4 MiB arrives whole.
func TestOutputOverGRPCDefaultDelivered(t *testing.T) {
	b := newBackend("east")
	var kv []string
	for i := range 6 {
		kv = append(kv, "r"+string(rune('a'+i))+"="+`"`+strings.Repeat("y", 1<<20)+`"`)
	}
	b.setOutput("east", output(1, kv...))
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	p := pull(t, e.clientFrom(t, "127.0.0.1", &cert), t.Context(), &relayv1.Hello{Cluster: "east", Held: &relayv1.Held{}})
	if d := p.next(t); len(d.GetUpserts()) != 6 {
		t.Fatalf("received %d resources, want 6", len(d.GetUpserts()))
	}
}
