package relay_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/pki/pkitest"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	trustDomain = "meshrelay.test"
	token       = "s3cret-token"
	wait        = 5 * time.Second
)

// fakeBackend is the server core as the relay sees it: registered clusters, inputs and
// outputs, and a record of what the relay reported.
type fakeBackend struct {
	mu         sync.Mutex // guards everything below
	registered map[string]bool
	inputs     map[string]*snapshot.Snapshot
	outputs    map[string]*snapshot.Snapshot
	subs       map[string]map[chan struct{}]struct{}
	subscribed map[string]int // Subscribe calls per cluster
	puts       []call
	acks       []call
	nacks      []call
	adopts     []call
	refusals   []call // EpochRefused: version is the refused epoch, hash the held one
	agentEpoch map[string]uint64
}

// call records one backend call.
type call struct {
	cluster string
	version uint64
	hash    string
	extra   string // agent or NACK reason
}

var _ relay.Backend = (*fakeBackend)(nil)

func newBackend(clusters ...string) *fakeBackend {
	b := &fakeBackend{
		registered: map[string]bool{},
		inputs:     map[string]*snapshot.Snapshot{},
		outputs:    map[string]*snapshot.Snapshot{},
		subs:       map[string]map[chan struct{}]struct{}{},
		subscribed: map[string]int{},
	}
	for _, c := range clusters {
		b.registered[c] = true
	}
	return b
}

func (b *fakeBackend) IsRegistered(cluster string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.registered[cluster]
}

func (b *fakeBackend) Input(cluster string) *snapshot.Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inputs[cluster]
}

func (b *fakeBackend) PutInput(_ context.Context, cluster string, s *snapshot.Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inputs[cluster] = s
	b.puts = append(b.puts, call{cluster, s.Version, s.Hash, ""})
}

func (b *fakeBackend) RefreshOutput(context.Context, string) {}

func (b *fakeBackend) Output(cluster string) *snapshot.Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.outputs[cluster]
}

func (b *fakeBackend) Subscribe(cluster string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[cluster] == nil {
		b.subs[cluster] = map[chan struct{}]struct{}{}
	}
	b.subs[cluster][ch] = struct{}{}
	b.subscribed[cluster]++
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs[cluster], ch)
	}
}

func (b *fakeBackend) AdoptVersion(cluster string, version uint64, hash string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.adopts = append(b.adopts, call{cluster, version, hash, ""})
}

func (b *fakeBackend) Acked(cluster string, version uint64, hash, agent string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.acks = append(b.acks, call{cluster, version, hash, agent})
}

func (b *fakeBackend) AgentEpoch(cluster string, held uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.agentEpoch == nil {
		b.agentEpoch = map[string]uint64{}
	}
	b.agentEpoch[cluster] = held
}

func (b *fakeBackend) EpochRefused(cluster string, refused, held uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refusals = append(b.refusals, call{cluster, refused, strconv.FormatUint(held, 10), ""})
}

func (b *fakeBackend) Refused(string, uint64, string, map[string]string) {}

func (b *fakeBackend) Nacked(cluster string, version uint64, hash, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nacks = append(b.nacks, call{cluster, version, hash, reason})
}

// setOutput publishes a new output for cluster and notifies its subscribers.
func (b *fakeBackend) setOutput(cluster string, s *snapshot.Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.outputs[cluster] = s
	for ch := range b.subs[cluster] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (b *fakeBackend) calls(which *[]call) []call {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(*which)
}

func (b *fakeBackend) subscriptions(cluster string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.subscribed[cluster]
}

// env is a relay server on loopback TLS with its CA and backend.
type env struct {
	ca      *pki.CA
	backend *fakeBackend
	addr    string
	server  *relay.Server
	reg     *prometheus.Registry
}

func newEnv(t *testing.T, cfg relay.ServerConfig, backend *fakeBackend) *env {
	t.Helper()
	ca, err := pki.NewCA(trustDomain, 24*time.Hour) // longer than the kit's: registrations may ask for 2 h
	if err != nil {
		t.Fatal(err)
	}
	serverCert := pkitest.Server(t, ca, "127.0.0.1").TLS
	if cfg.Token == nil {
		cfg.Token = func() (string, error) { return token, nil }
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	rs := relay.NewServer(cfg, backend, ca, log, reg)
	gs := grpc.NewServer(append(rs.GRPCOptions(), grpc.Creds(credentials.NewTLS(rs.TLSConfig(serverCert))), grpc.WaitForHandlers(true))...)
	rs.Attach(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &env{ca: ca, backend: backend, addr: lis.Addr().String(), server: rs, reg: reg}
}

// client dials the server presenting cert (nil: none).
func (e *env) client(t *testing.T, cert *tls.Certificate) relayv1.RelayServiceClient {
	t.Helper()
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: e.ca.Pool(), ServerName: "127.0.0.1"}
	if cert != nil {
		tcfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient("passthrough:///"+e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tcfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return relayv1.NewRelayServiceClient(conn)
}

// register obtains a client certificate for cluster through the Register RPC.
func (e *env) register(t *testing.T, cluster string) tls.Certificate {
	t.Helper()
	req, key := registerReq(t, cluster, token)
	resp, err := e.client(t, nil).Register(t.Context(), req)
	if err != nil {
		t.Fatalf("Register(%s): %v", cluster, err)
	}
	return keyPair(t, resp.GetCertificatePem(), key)
}

func keyPair(t *testing.T, certPEM []byte, key crypto.Signer) tls.Certificate {
	t.Helper()
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// received is one message (or the final error) of a stream.
type received[T any] struct {
	msg T
	err error
}

// reader receives from a stream in the background; it stops at the first error.
func reader[T any](recv func() (T, error)) <-chan received[T] {
	ch := make(chan received[T], 64)
	go func() {
		defer close(ch)
		for {
			m, err := recv()
			ch <- received[T]{m, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func next[T any](t *testing.T, ch <-chan received[T]) T {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("stream already ended")
		}
		if r.err != nil {
			t.Fatalf("stream ended: %v", r.err)
		}
		return r.msg
	case <-time.After(wait):
		t.Fatalf("no message within %s", wait)
	}
	panic("unreachable")
}

// streamError waits for the stream to end and returns its error; a message is a failure.
func streamError[T any](t *testing.T, ch <-chan received[T]) error {
	t.Helper()
	select {
	case r := <-ch:
		if r.err == nil {
			t.Fatalf("received %v, want the stream to fail", r.msg)
		}
		return r.err
	case <-time.After(wait):
		t.Fatalf("stream did not fail within %s", wait)
	}
	return nil
}

func nothingFor[T any](t *testing.T, ch <-chan received[T], d time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("received %v (error %v), want nothing for %s", r.msg, r.err, d)
	case <-time.After(d):
	}
}

func wantCode(t *testing.T, err error, code codes.Code, contains ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("error %v: code %s, want %s", err, status.Code(err), code)
	}
	for _, c := range contains {
		if !strings.Contains(status.Convert(err).Message(), c) {
			t.Errorf("error message %q does not contain %q", status.Convert(err).Message(), c)
		}
	}
}

type pullStream struct {
	s  relayv1.RelayService_PullClient
	in <-chan received[*relayv1.PullResponse]
}

// pull opens a Pull stream and sends hello.
func pull(t *testing.T, c relayv1.RelayServiceClient, ctx context.Context, hello *relayv1.Hello) *pullStream {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	s, err := c.Pull(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&relayv1.PullRequest{Message: &relayv1.PullRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	return &pullStream{s: s, in: reader(s.Recv)}
}

func (p *pullStream) next(t *testing.T) *relayv1.SnapshotDelta {
	t.Helper()
	m := next(t, p.in)
	if m.GetSnapshot() == nil {
		t.Fatalf("received %v, want a snapshot", m)
	}
	return m.GetSnapshot()
}

func (p *pullStream) ack(t *testing.T, d *relayv1.SnapshotDelta) {
	t.Helper()
	if err := p.s.Send(&relayv1.PullRequest{Message: &relayv1.PullRequest_Ack{Ack: &relayv1.Ack{Version: d.GetVersion(), Hash: d.GetHash()}}}); err != nil {
		t.Fatal(err)
	}
}

func (p *pullStream) nack(t *testing.T, d *relayv1.SnapshotDelta, needFull bool) {
	t.Helper()
	n := &relayv1.Nack{Version: d.GetVersion(), Hash: d.GetHash(), Error: "cannot apply", NeedFull: needFull}
	if err := p.s.Send(&relayv1.PullRequest{Message: &relayv1.PullRequest_Nack{Nack: n}}); err != nil {
		t.Fatal(err)
	}
}

func res(key, body string) snapshot.Resource { return snapshot.NewResource(key, []byte(body)) }

// output builds an output snapshot from key=body pairs.
func output(version uint64, kv ...string) *snapshot.Snapshot {
	var rs []snapshot.Resource
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		rs = append(rs, res(k, v))
	}
	return snapshot.New(version, 1, rs)
}

func upsertKeys(d *relayv1.SnapshotDelta) []string {
	var out []string
	for _, r := range d.GetUpserts() {
		out = append(out, r.GetKey())
	}
	return out
}

func held(s *snapshot.Snapshot) *relayv1.Held {
	return &relayv1.Held{Version: s.Version, Hash: s.Hash, ResourceHashes: s.ResourceHashes(), Epoch: s.Epoch}
}

func TestRegister(t *testing.T) {
	e := newEnv(t, relay.ServerConfig{CertTTL: 2 * time.Hour}, newBackend("east"))
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "east")
	if err != nil {
		t.Fatal(err)
	}
	c := e.client(t, nil)
	refused := []struct {
		name     string
		req      *relayv1.RegisterRequest
		code     codes.Code
		contains []string
	}{
		{"wrong token", &relayv1.RegisterRequest{Token: "guess", Cluster: "east", CsrPem: csr}, codes.Unauthenticated, []string{"token"}},
		{"no token", &relayv1.RegisterRequest{Cluster: "east", CsrPem: csr}, codes.Unauthenticated, []string{"token"}},
		{"unknown cluster", &relayv1.RegisterRequest{Token: token, Cluster: "ghost", CsrPem: csr}, codes.PermissionDenied, []string{`"ghost"`, "not registered"}},
		{"bad csr", &relayv1.RegisterRequest{Token: token, Cluster: "east", CsrPem: []byte("not a csr")}, codes.InvalidArgument, []string{"CSR"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Register(t.Context(), tc.req)
			wantCode(t, err, tc.code, tc.contains...)
		})
	}

	t.Run("good", func(t *testing.T) {
		resp, err := c.Register(t.Context(), &relayv1.RegisterRequest{Token: token, Cluster: "east", CsrPem: csr})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := pki.ParseCertPEM(resp.GetCertificatePem())
		if err != nil {
			t.Fatal(err)
		}
		id := pki.SpiffeID(trustDomain, "east")
		if len(cert.URIs) != 1 || cert.URIs[0].String() != id || resp.GetIdentity() != id {
			t.Errorf("certificate URIs %v, identity %q; want %s", cert.URIs, resp.GetIdentity(), id)
		}
		if cluster, err := pki.ClusterFromCert(cert, trustDomain); err != nil || cluster != "east" {
			t.Errorf("ClusterFromCert = %q, %v", cluster, err)
		}
		if err := e.ca.Verify(cert, x509.ExtKeyUsageClientAuth); err != nil {
			t.Errorf("issued certificate does not verify as a client certificate: %v", err)
		}
		if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
			t.Error("certificate is not for the CSR's key")
		}
		if string(resp.GetCaPem()) != string(e.ca.CertPEM) {
			t.Error("response CA bundle differs from the CA")
		}
		if resp.GetNotAfterUnix() != cert.NotAfter.Unix() {
			t.Errorf("not_after %d, certificate %d", resp.GetNotAfterUnix(), cert.NotAfter.Unix())
		}
		if ttl := time.Until(cert.NotAfter); ttl < time.Hour || ttl > 2*time.Hour+time.Minute {
			t.Errorf("certificate lifetime %s, want the configured 2h", ttl)
		}
	})
}

func TestRegisterTokenUnavailable(t *testing.T) {
	e := newEnv(t, relay.ServerConfig{Token: func() (string, error) { return "", fmt.Errorf("token file missing") }}, newBackend("east"))
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "east")
	_, err := e.client(t, nil).Register(t.Context(), &relayv1.RegisterRequest{Token: token, Cluster: "east", CsrPem: csr})
	wantCode(t, err, codes.Unavailable)
}

func TestPullRefused(t *testing.T) {
	b := newBackend("east", "west")
	b.setOutput("west", output(1, "secret=1"))
	b.setOutput("east", output(1, "a=1"))
	e := newEnv(t, relay.ServerConfig{}, b)
	east := e.register(t, "east")
	foreign := pkitest.Cluster(t, pkitest.CA(t, trustDomain), "east").TLS
	unregistered := pkitest.Cluster(t, e.ca, "gone").TLS
	serverAsClient := pkitest.Server(t, e.ca, "east").TLS

	tests := []struct {
		name     string
		cert     *tls.Certificate
		claim    string
		code     codes.Code
		contains []string
	}{
		{"certificate of east claims west", &east, "west", codes.PermissionDenied, []string{`"east"`, `"west"`}},
		{"certificate of east claims nothing", &east, "", codes.PermissionDenied, []string{`"east"`}},
		{"no client certificate", nil, "east", codes.Unauthenticated, []string{"no client certificate"}},
		{"certificate of another CA", &foreign, "east", codes.Unavailable, nil},
		{"server certificate as client certificate", &serverAsClient, "east", codes.Unavailable, nil},
		{"certificate of an unregistered cluster", &unregistered, "gone", codes.PermissionDenied, []string{`"gone"`, "not registered"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.client(t, tc.cert)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			s, err := c.Pull(ctx)
			if err == nil {
				// The handshake may fail before or after the stream opens.
				if serr := s.Send(&relayv1.PullRequest{Message: &relayv1.PullRequest_Hello{Hello: &relayv1.Hello{Cluster: tc.claim}}}); serr == nil {
					err = streamError(t, reader(s.Recv))
				} else {
					_, err = s.Recv()
				}
			}
			wantCode(t, err, tc.code, tc.contains...)
		})
	}
	if n := b.subscriptions("west"); n != 0 {
		t.Errorf("west's output was subscribed %d times by refused streams", n)
	}
	for _, a := range b.calls(&b.adopts) {
		t.Errorf("refused stream reported what it holds: %+v", a)
	}
	if n := b.subscriptions("gone"); n != 0 {
		t.Errorf("unregistered cluster subscribed %d times", n)
	}
}

func TestPushRefused(t *testing.T) {
	b := newBackend("east", "west")
	e := newEnv(t, relay.ServerConfig{}, b)
	east := e.register(t, "east")
	tests := []struct {
		name  string
		cert  *tls.Certificate
		first *relayv1.PushRequest
		code  codes.Code
	}{
		{"claims another cluster", &east, &relayv1.PushRequest{Message: &relayv1.PushRequest_Hello{Hello: &relayv1.Hello{Cluster: "west"}}}, codes.PermissionDenied},
		{"no client certificate", nil, &relayv1.PushRequest{Message: &relayv1.PushRequest_Hello{Hello: &relayv1.Hello{Cluster: "east"}}}, codes.Unauthenticated},
		{"snapshot before hello", &east, &relayv1.PushRequest{Message: &relayv1.PushRequest_Snapshot{Snapshot: relaywire.ToProto(snapshot.Diff(nil, output(1, "a=1")), "")}}, codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := e.client(t, tc.cert).Push(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(tc.first); err != nil {
				t.Fatal(err)
			}
			wantCode(t, streamError(t, reader(s.Recv)), tc.code)
		})
	}
	if puts := b.calls(&b.puts); len(puts) != 0 {
		t.Errorf("refused pushes stored inputs: %+v", puts)
	}
}

func TestPullFullThenDeltas(t *testing.T) {
	b := newBackend("east")
	v1 := output(1, "a=1", "c=3", "b=2")
	b.setOutput("east", v1)
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	p := pull(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east", AgentVersion: "test"})

	d := p.next(t)
	if !d.GetFull() || d.GetVersion() != 1 || d.GetHash() != v1.Hash || d.GetEpoch() != 1 || d.GetBaseHash() != "" {
		t.Fatalf("first message: full %v version %d epoch %d base %q; want a full snapshot of version 1", d.GetFull(), d.GetVersion(), d.GetEpoch(), d.GetBaseHash())
	}
	if got := upsertKeys(d); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("upserts %v, want the whole output sorted", got)
	}
	state, err := snapshot.Apply(nil, relaywire.FromProto(d))
	if err != nil {
		t.Fatal(err)
	}

	// A change before the ACK waits for it; the delta after it is computed from what was acked.
	v2 := output(2, "a=1", "b=22", "c=3")
	b.setOutput("east", v2)
	p.ack(t, d)
	poll.Until(t, wait, "the ACK to reach the backend", func() bool {
		acks := b.calls(&b.acks)
		return len(acks) == 1 && acks[0].cluster == "east" && acks[0].version == 1 && acks[0].hash == v1.Hash && acks[0].extra != ""
	})
	d = p.next(t)
	if d.GetFull() || d.GetVersion() != 2 || d.GetBaseHash() != v1.Hash || len(d.GetRemovals()) != 0 {
		t.Fatalf("second message: full %v version %d base %q removals %v; want a delta from version 1", d.GetFull(), d.GetVersion(), d.GetBaseHash(), d.GetRemovals())
	}
	if got := upsertKeys(d); !slices.Equal(got, []string{"b"}) {
		t.Errorf("upserts %v, want only the changed resource", got)
	}
	if state, err = snapshot.Apply(state, relaywire.FromProto(d)); err != nil || state.Hash != v2.Hash {
		t.Fatalf("applying the delta: %v", err)
	}
	p.ack(t, d)

	v3 := output(3, "a=1", "b=22", "d=4")
	b.setOutput("east", v3)
	d = p.next(t)
	if d.GetFull() || d.GetBaseHash() != v2.Hash || !slices.Equal(upsertKeys(d), []string{"d"}) || !slices.Equal(d.GetRemovals(), []string{"c"}) {
		t.Fatalf("third message: full %v base %q upserts %v removals %v", d.GetFull(), d.GetBaseHash(), upsertKeys(d), d.GetRemovals())
	}
	if state, err = snapshot.Apply(state, relaywire.FromProto(d)); err != nil || state.Hash != v3.Hash {
		t.Fatalf("applying the delta: %v", err)
	}
	p.ack(t, d)
	poll.Until(t, wait, "three ACKs", func() bool { return len(b.calls(&b.acks)) == 3 })
}

func TestPullHelloHoldingCurrentGetsNothing(t *testing.T) {
	b := newBackend("east")
	v3 := output(3, "a=1", "b=2")
	b.setOutput("east", v3)
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	p := pull(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east", Held: held(v3.WithVersion(9, 1))})

	poll.Until(t, wait, "the hello to be processed", func() bool { return len(b.calls(&b.acks)) == 1 && b.subscriptions("east") == 1 })
	if acks := b.calls(&b.acks); acks[0].version != 3 || acks[0].hash != v3.Hash {
		t.Errorf("ack recorded %+v, want version 3", acks[0])
	}
	if adopts := b.calls(&b.adopts); len(adopts) != 1 || adopts[0] != (call{"east", 9, v3.Hash, ""}) {
		t.Errorf("AdoptVersion calls %+v, want east 9 %s", adopts, v3.Hash)
	}
	nothingFor(t, p.in, 300*time.Millisecond)

	// The stream is alive: a change arrives as a delta from what the agent holds (the real
	// backend numbers it above the agent's version 9, see AdoptVersion).
	b.setOutput("east", output(10, "a=1", "b=3"))
	d := p.next(t)
	if d.GetFull() || d.GetBaseHash() != v3.Hash || !slices.Equal(upsertKeys(d), []string{"b"}) {
		t.Errorf("delta full %v base %q upserts %v", d.GetFull(), d.GetBaseHash(), upsertKeys(d))
	}
}

func TestPullHelloHoldingOlderGetsDelta(t *testing.T) {
	b := newBackend("east")
	v1 := output(1, "a=1", "b=2", "c=3")
	v2 := output(2, "a=1", "b=20")
	b.setOutput("east", v2)
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	p := pull(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east", Held: held(v1)})
	d := p.next(t)
	if d.GetFull() || d.GetBaseHash() != v1.Hash || !slices.Equal(upsertKeys(d), []string{"b"}) || !slices.Equal(d.GetRemovals(), []string{"c"}) {
		t.Fatalf("delta full %v base %q upserts %v removals %v", d.GetFull(), d.GetBaseHash(), upsertKeys(d), d.GetRemovals())
	}
	if got, err := snapshot.Apply(v1, relaywire.FromProto(d)); err != nil || got.Hash != v2.Hash {
		t.Errorf("apply: %v", err)
	}
}

func TestPullNack(t *testing.T) {
	b := newBackend("east")
	v1 := output(1, "a=1", "b=2")
	b.setOutput("east", v1)
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	p := pull(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east"})
	p.ack(t, p.next(t))

	// NACK without need_full: the refused content is not sent again; the next change is a
	// delta from the last acknowledged snapshot.
	v2 := output(2, "a=1", "b=3")
	b.setOutput("east", v2)
	d := p.next(t)
	p.nack(t, d, false)
	poll.Until(t, wait, "the NACK to reach the backend", func() bool { return len(b.calls(&b.nacks)) == 1 })
	if n := b.calls(&b.nacks)[0]; n.cluster != "east" || n.version != 2 || n.hash != v2.Hash || n.extra != "cannot apply" {
		t.Errorf("NACK recorded %+v", n)
	}
	v3 := output(3, "a=1", "b=4")
	b.setOutput("east", v3)
	d = p.next(t)
	if d.GetVersion() != 3 || d.GetFull() || d.GetBaseHash() != v1.Hash {
		t.Fatalf("after NACK: version %d full %v base %q; want a delta of version 3 from version 1", d.GetVersion(), d.GetFull(), d.GetBaseHash())
	}

	// NACK with need_full: the next send is the full snapshot.
	p.nack(t, d, true)
	d = p.next(t)
	if !d.GetFull() || d.GetVersion() != 3 || d.GetHash() != v3.Hash || !slices.Equal(upsertKeys(d), []string{"a", "b"}) {
		t.Fatalf("after NACK need_full: full %v version %d upserts %v; want the full version 3", d.GetFull(), d.GetVersion(), upsertKeys(d))
	}
	if _, err := snapshot.Apply(nil, relaywire.FromProto(d)); err != nil {
		t.Fatal(err)
	}
	p.ack(t, d)
	poll.Until(t, wait, "the ACK of the full snapshot", func() bool {
		acks := b.calls(&b.acks)
		return len(acks) == 2 && acks[1].version == 3
	})
}

func TestPullRecycledWithoutAck(t *testing.T) {
	b := newBackend("east")
	b.setOutput("east", output(1, "a=1"))
	e := newEnv(t, relay.ServerConfig{AckTimeout: 100 * time.Millisecond}, b)
	cert := e.register(t, "east")
	p := pull(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east"})
	p.next(t)
	wantCode(t, streamError(t, p.in), codes.DeadlineExceeded, "version 1")
}

type pushStream struct {
	s  relayv1.RelayService_PushClient
	in <-chan received[*relayv1.PushResponse]
}

func (p *pushStream) send(t *testing.T, d snapshot.Delta, base string) {
	t.Helper()
	if err := p.s.Send(&relayv1.PushRequest{Message: &relayv1.PushRequest_Snapshot{Snapshot: relaywire.ToProto(d, base)}}); err != nil {
		t.Fatal(err)
	}
}

func (p *pushStream) held(t *testing.T) *relayv1.Held {
	t.Helper()
	m := next(t, p.in)
	if m.GetHeld() == nil {
		t.Fatalf("received %v, want held", m)
	}
	return m.GetHeld()
}

func (p *pushStream) ack(t *testing.T) *relayv1.Ack {
	t.Helper()
	m := next(t, p.in)
	if m.GetAck() == nil {
		t.Fatalf("received %v, want an ack", m)
	}
	return m.GetAck()
}

func push(t *testing.T, c relayv1.RelayServiceClient, ctx context.Context, hello *relayv1.Hello) *pushStream {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	s, err := c.Push(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&relayv1.PushRequest{Message: &relayv1.PushRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	return &pushStream{s: s, in: reader(s.Recv)}
}

func TestPush(t *testing.T) {
	b := newBackend("east")
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	v1 := snapshot.New(1, 0, []snapshot.Resource{res("Service/shop/web", `{"kind":"Service"}`), res("Service/shop/db", `{"kind":"Service","x":1}`)})
	p := push(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east", Held: &relayv1.Held{Version: 1, Hash: v1.Hash}})

	if h := p.held(t); h.GetHash() != "" || h.GetVersion() != 0 || len(h.GetResourceHashes()) != 0 {
		t.Fatalf("first held %v, want nothing held", h)
	}
	// First delta: from nothing, not flagged full.
	p.send(t, snapshot.Diff(map[string]string{}, v1), "")
	if a := p.ack(t); a.GetVersion() != 1 || a.GetHash() != v1.Hash {
		t.Fatalf("ack %v, want version 1 %s", a, v1.Hash)
	}
	if puts := b.calls(&b.puts); len(puts) != 1 || puts[0] != (call{"east", 1, v1.Hash, ""}) {
		t.Fatalf("PutInput calls %+v", puts)
	}
	if got := b.Input("east"); got.Hash != v1.Hash || got.Len() != 2 {
		t.Errorf("stored input %d resources hash %s", got.Len(), got.Hash)
	}

	// A delta on top of it.
	v2 := snapshot.New(2, 0, []snapshot.Resource{res("Service/shop/web", `{"kind":"Service","v":2}`), res("Service/shop/db", `{"kind":"Service","x":1}`)})
	p.send(t, snapshot.Diff(v1.ResourceHashes(), v2), v1.Hash)
	if a := p.ack(t); a.GetVersion() != 2 || a.GetHash() != v2.Hash {
		t.Fatalf("ack %v, want version 2", a)
	}

	// A delta from a base the server does not hold: the server answers with what it holds.
	v3 := snapshot.New(3, 0, []snapshot.Resource{res("Service/shop/web", `{"kind":"Service","v":3}`)})
	p.send(t, snapshot.Diff(v1.ResourceHashes(), v3), v1.Hash)
	h := p.held(t)
	if h.GetVersion() != 2 || h.GetHash() != v2.Hash || len(h.GetResourceHashes()) != 2 || h.GetResourceHashes()["Service/shop/web"] != v2.Resources["Service/shop/web"].Hash {
		t.Fatalf("held after a wrong base: %v, want version 2", h)
	}
	if got := b.Input("east"); got.Hash != v2.Hash {
		t.Error("a delta with a wrong base changed the input")
	}

	// A delta with the right base but a body that does not match its hash: resync as well.
	bad := snapshot.Diff(v2.ResourceHashes(), v3)
	bad.Upserts = []snapshot.Resource{{Key: "Service/shop/web", Hash: v3.Resources["Service/shop/web"].Hash, Body: []byte(`{"kind":"Service","v":666}`)}}
	p.send(t, bad, v2.Hash)
	if h := p.held(t); h.GetHash() != v2.Hash {
		t.Fatalf("held after a tampered body: %v", h)
	}

	// The agent resends from what the server holds.
	p.send(t, snapshot.Diff(h.GetResourceHashes(), v3), h.GetHash())
	if a := p.ack(t); a.GetVersion() != 3 || a.GetHash() != v3.Hash {
		t.Fatalf("ack %v, want version 3", a)
	}
	if got := b.Input("east"); got.Hash != v3.Hash || got.Len() != 1 {
		t.Errorf("input after resend: %d resources", got.Len())
	}

	// A full snapshot needs no base.
	v4 := snapshot.New(4, 0, []snapshot.Resource{res("Service/other/x", `{}`)})
	p.send(t, snapshot.Diff(nil, v4), "ignored")
	if a := p.ack(t); a.GetVersion() != 4 || a.GetHash() != v4.Hash {
		t.Fatalf("ack %v, want version 4", a)
	}
	if n := len(b.calls(&b.puts)); n != 4 {
		t.Errorf("%d PutInput calls, want 4", n)
	}
}

func TestPushReconnectGetsHeld(t *testing.T) {
	b := newBackend("east")
	in := snapshot.New(5, 0, []snapshot.Resource{res("k", `{"a":1}`)})
	b.inputs["east"] = in
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	p := push(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east", Held: &relayv1.Held{Version: 5, Hash: in.Hash}})
	h := p.held(t)
	if h.GetVersion() != 5 || h.GetHash() != in.Hash || h.GetResourceHashes()["k"] != in.Resources["k"].Hash {
		t.Errorf("held %v, want the stored input", h)
	}
}

func TestTLSMode(t *testing.T) {
	b := newBackend("east", "west")
	v1 := output(1, "a=1")
	b.setOutput("east", v1)
	b.setOutput("west", output(1, "w=1"))
	e := newEnv(t, relay.ServerConfig{Mode: relaywire.ModeTLS}, b)
	c := e.client(t, nil)
	md := func(kv ...string) context.Context { return metadata.AppendToOutgoingContext(t.Context(), kv...) }

	refused := []struct {
		name  string
		ctx   context.Context
		claim string
		code  codes.Code
	}{
		{"no token", t.Context(), "east", codes.Unauthenticated},
		{"no token, cluster metadata", md(relaywire.MetadataCluster, "east"), "east", codes.Unauthenticated},
		{"wrong token", md(relaywire.MetadataToken, "guess", relaywire.MetadataCluster, "east"), "east", codes.Unauthenticated},
		{"hello claims another cluster", md(relaywire.MetadataToken, token, relaywire.MetadataCluster, "east"), "west", codes.PermissionDenied},
		{"unregistered cluster", md(relaywire.MetadataToken, token, relaywire.MetadataCluster, "ghost"), "ghost", codes.PermissionDenied},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			p := pull(t, c, tc.ctx, &relayv1.Hello{Cluster: tc.claim})
			wantCode(t, streamError(t, p.in), tc.code)
		})
	}
	if n := b.subscriptions("west"); n != 0 {
		t.Errorf("west subscribed %d times by refused streams", n)
	}

	t.Run("token", func(t *testing.T) {
		p := pull(t, c, md(relaywire.MetadataToken, token, relaywire.MetadataCluster, "east"), &relayv1.Hello{Cluster: "east"})
		d := p.next(t)
		if !d.GetFull() || d.GetHash() != v1.Hash {
			t.Errorf("first message full %v hash %s, want the full output", d.GetFull(), d.GetHash())
		}
		ps := push(t, c, md(relaywire.MetadataToken, token, relaywire.MetadataCluster, "east"), &relayv1.Hello{Cluster: "east"})
		ps.held(t)
	})

	t.Run("register refused", func(t *testing.T) {
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, "east")
		_, err := c.Register(t.Context(), &relayv1.RegisterRequest{Token: token, Cluster: "east", CsrPem: csr})
		wantCode(t, err, codes.FailedPrecondition)
	})
}

// An agent holding an output of a newer epoch than the server's (the store lost the lock
// and it was taken again too low): the server sends nothing it would refuse, hands the
// agent's epoch to the backend (which raises the lock above it) and records the refusal;
// the output made under the raised epoch is sent.
func TestPullAgentHoldsNewerEpoch(t *testing.T) {
	b := newBackend("east")
	agentHolds := output(4, "a=1").WithVersion(4, 2)
	b.setOutput("east", output(5, "a=1", "b=2")) // epoch 1
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	p := pull(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east", Held: held(agentHolds)})

	poll.Until(t, wait, "the refusal recorded", func() bool {
		r := b.calls(&b.refusals)
		return len(r) > 0 && r[0] == call{"east", 1, "2", ""}
	})
	b.mu.Lock()
	witnessed := b.agentEpoch["east"]
	b.mu.Unlock()
	if witnessed != 2 {
		t.Errorf("agent epoch handed to the backend %d, want 2", witnessed)
	}
	nothingFor(t, p.in, 300*time.Millisecond)

	raised := output(6, "a=1", "b=2").WithVersion(6, 3)
	b.setOutput("east", raised)
	if d := p.next(t); d.GetEpoch() != 3 || d.GetHash() != raised.Hash || d.GetBaseHash() != agentHolds.Hash {
		t.Fatalf("sent epoch %d hash %.12s base %.12s, want the epoch-3 output as a delta", d.GetEpoch(), d.GetHash(), d.GetBaseHash())
	}
}

// The expiry of the client certificate an agent connects with is in Connections and in
// meshrelay_relay_agent_certificate_expiry_timestamp_seconds while its streams are open.
func TestAgentCertificateExpiry(t *testing.T) {
	b := newBackend("east")
	b.setOutput("east", output(1, "a=1"))
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	notAfter := cert.Leaf.NotAfter.UTC()
	ctx, cancel := context.WithCancel(t.Context())
	p := pull(t, e.client(t, &cert), ctx, &relayv1.Hello{Cluster: "east", AgentVersion: "test"})
	p.next(t)
	if got := e.server.Connections()["east"].CertificateNotAfter; !got.Equal(notAfter) {
		t.Errorf("connection's certificate expiry %s, want the agent certificate's %s", got, notAfter)
	}
	metric := func() (float64, bool) {
		fams, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == "meshrelay_relay_agent_certificate_expiry_timestamp_seconds" {
				for _, m := range f.GetMetric() {
					if m.GetLabel()[0].GetValue() == "east" {
						return m.GetGauge().GetValue(), true
					}
				}
			}
		}
		return 0, false
	}
	if v, ok := metric(); !ok || v != float64(notAfter.Unix()) {
		t.Errorf("expiry metric %v (present %v), want %d", v, ok, notAfter.Unix())
	}
	cancel()
	poll.Until(t, wait, "the metric to go with the agent's streams", func() bool { _, ok := metric(); return !ok })
}
