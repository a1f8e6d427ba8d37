package relay_test

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// The fuzz targets of this file feed decoded wire messages to the real server handlers
// (Register, Push, Pull) through an in-memory stream: a message that does not unmarshal
// ends the stream as gRPC would, the others are handled as if an agent had sent them.

const fuzzCluster = "local"

// fuzzSnapshots are two real input snapshots (the seed003 case's clusters) and an output.
func fuzzSnapshots(f *testing.F) (base, next *snapshot.Snapshot) {
	f.Helper()
	ins, errs := resource.LoadInputsDir(filepath.Join("..", "translate", "testdata", "seed003", "inputs"))
	if len(errs) > 0 || ins["local"] == nil || ins["remote"] == nil {
		f.Fatalf("seed003 inputs: %v", errs)
	}
	return ins["local"], ins["remote"].WithVersion(2, 0)
}

func marshal(f *testing.F, m proto.Message) []byte {
	f.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// memStream is a server stream whose Recv returns the decoded messages in turn (a message
// that does not unmarshal ends the stream with codes.Internal, as gRPC does), then io.EOF;
// Send records what the handler sends.
type memStream[Req, Res any] struct {
	grpc.ServerStream
	ctx context.Context
	in  [][]byte

	mu   sync.Mutex // guards sent
	sent []*Res
}

func (s *memStream[Req, Res]) Context() context.Context     { return s.ctx }
func (s *memStream[Req, Res]) SendHeader(metadata.MD) error { return nil }

func (s *memStream[Req, Res]) Recv() (*Req, error) {
	if len(s.in) == 0 {
		return nil, io.EOF
	}
	b := s.in[0]
	s.in = s.in[1:]
	m := new(Req)
	if err := proto.Unmarshal(b, any(m).(proto.Message)); err != nil {
		s.in = nil
		return nil, status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	return m, nil
}

func (s *memStream[Req, Res]) Send(m *Res) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, m)
	return nil
}

// tlsModeContext is the context of a stream in tls mode: the token and cluster in metadata.
func tlsModeContext(t *testing.T) context.Context {
	return metadata.NewIncomingContext(t.Context(), metadata.Pairs(relaywire.MetadataToken, token, relaywire.MetadataCluster, fuzzCluster))
}

func fuzzServer(mode string, b *fakeBackend, ca *pki.CA) *relay.Server {
	cfg := relay.ServerConfig{Mode: mode, Token: func() (string, error) { return token, nil }, AckTimeout: time.Hour}
	return relay.NewServer(cfg, b, ca, slog.New(slog.DiscardHandler), nil)
}

// verified says whether every body of s hashes to its resource's hash and the resources
// to the snapshot's hash.
func verified(s *snapshot.Snapshot) bool {
	for k, r := range s.Resources {
		if k != r.Key || snapshot.HashBytes(r.Body) != r.Hash {
			return false
		}
	}
	return snapshot.FromMap(s.Version, s.Epoch, s.Resources).Hash == s.Hash
}

// FuzzPush sends a hello and two more messages on a Push stream (inputs up: Hello,
// SnapshotDelta, AgentReport). Whatever the bytes: no panic; the cluster's input changes
// only to a snapshot whose every hash verifies and that some delta announced (or, for a
// delta announcing no hash, that it built) and that the stores can persist and read back,
// each change acknowledged once; a stream whose hello is missing or names another cluster
// stores nothing.
func FuzzPush(f *testing.F) {
	base, next := fuzzSnapshots(f)
	hello := marshal(f, &relayv1.PushRequest{Message: &relayv1.PushRequest_Hello{Hello: &relayv1.Hello{Cluster: fuzzCluster, Held: held(base), AgentVersion: "fuzz"}}})
	delta := func(d snapshot.Delta, baseHash string) []byte {
		return marshal(f, &relayv1.PushRequest{Message: &relayv1.PushRequest_Snapshot{Snapshot: relaywire.ToProto(d, baseHash)}})
	}
	incremental := delta(snapshot.Diff(base.ResourceHashes(), next), base.Hash)
	full := delta(snapshot.Diff(nil, next), "")
	report := marshal(f, &relayv1.PushRequest{Message: &relayv1.PushRequest_Report{Report: &relayv1.AgentReport{
		DiscoveryError: "list services: forbidden", DataPlane: []*relayv1.DataPlaneProblem{{Node: "gw-1", TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Error: "bad"}}}}})
	// Upserts whose bodies match their hashes but are no JSON: not what an agent discovers.
	odd := func(bodies ...string) []byte {
		d := snapshot.Delta{Version: 9, Full: true}
		for i, b := range bodies {
			d.Upserts = append(d.Upserts, snapshot.Resource{Key: "Service/default/s" + strconv.Itoa(i), Hash: snapshot.HashBytes([]byte(b)), Body: []byte(b)})
		}
		return delta(d, "")
	}
	f.Add(hello, odd("not json"), report)
	f.Add(hello, odd(""), incremental)
	f.Add(hello, incremental, report)
	f.Add(hello, full, incremental)
	f.Add(hello, report, full)
	f.Add(incremental, full, report) // no hello
	f.Fuzz(func(t *testing.T, m0, m1, m2 []byte) {
		b := newBackend(fuzzCluster)
		b.inputs[fuzzCluster] = base
		s := fuzzServer(relaywire.ModeTLS, b, nil)
		st := &memStream[relayv1.PushRequest, relayv1.PushResponse]{ctx: tlsModeContext(t), in: [][]byte{m0, m1, m2}}
		_ = s.Push(st) // any end is fine; what was stored is checked below

		announced := map[string]bool{}
		for _, m := range [][]byte{m1, m2} {
			var r relayv1.PushRequest
			if proto.Unmarshal(m, &r) == nil && r.GetSnapshot() != nil {
				announced[r.GetSnapshot().GetHash()] = true
			}
		}
		var h relayv1.PushRequest
		helloOK := proto.Unmarshal(m0, &h) == nil && h.GetHello().GetCluster() == fuzzCluster
		puts := b.calls(&b.puts)
		if !helloOK && len(puts) > 0 {
			t.Fatalf("a stream without a hello for %q stored %d inputs", fuzzCluster, len(puts))
		}
		for _, p := range puts {
			if !announced[p.hash] && !announced[""] {
				t.Fatalf("stored input %s was announced by no delta", p.hash)
			}
		}
		if in := b.Input(fuzzCluster); !verified(in) {
			t.Fatal("stored input does not verify")
		} else if enc, err := snapshot.EncodeSnapshot(in); err != nil {
			t.Fatalf("stored input cannot be persisted: %v", err)
		} else if _, err := snapshot.DecodeSnapshot(enc); err != nil {
			t.Fatalf("persisted input cannot be read back: %v", err)
		}
		acks := 0
		for _, m := range st.sent {
			if a := m.GetAck(); a != nil {
				acks++
				if len(puts) < acks || puts[acks-1].hash != a.GetHash() {
					t.Fatalf("ack %d (%s) does not match a stored input", acks, a.GetHash())
				}
			}
		}
		if acks != len(puts) {
			t.Fatalf("%d inputs stored, %d acknowledged", len(puts), acks)
		}
	})
}

// FuzzPull sends a hello and two more messages on a Pull stream (outputs down, answered by
// Ack and Nack). Whatever the bytes: no panic; every delta sent brings the agent to the
// output's content; only an answer naming the output sent is recorded as an ACK or a NACK.
func FuzzPull(f *testing.F) {
	base, out := fuzzSnapshots(f)
	out = out.WithVersion(5, 2)
	helloNone := marshal(f, &relayv1.PullRequest{Message: &relayv1.PullRequest_Hello{Hello: &relayv1.Hello{Cluster: fuzzCluster}}})
	helloBase := marshal(f, &relayv1.PullRequest{Message: &relayv1.PullRequest_Hello{Hello: &relayv1.Hello{Cluster: fuzzCluster, Held: held(base)}}})
	ack := marshal(f, &relayv1.PullRequest{Message: &relayv1.PullRequest_Ack{Ack: &relayv1.Ack{Version: out.Version, Hash: out.Hash,
		Refusals: []*relayv1.ObjectRefusal{{Key: "DestinationRule/default/x", Reason: "webhook said no"}}}}})
	nack := marshal(f, &relayv1.PullRequest{Message: &relayv1.PullRequest_Nack{Nack: &relayv1.Nack{Version: out.Version, Hash: out.Hash, Error: relaywire.StaleEpochError(2, 9)}}})
	nackFull := marshal(f, &relayv1.PullRequest{Message: &relayv1.PullRequest_Nack{Nack: &relayv1.Nack{Version: out.Version, Hash: out.Hash, Error: "bad", NeedFull: true}}})
	f.Add(helloNone, ack, nack)
	f.Add(helloBase, nackFull, ack)
	f.Add(helloBase, nack, nackFull)
	f.Add(ack, ack, ack) // no hello
	f.Fuzz(func(t *testing.T, m0, m1, m2 []byte) {
		b := newBackend(fuzzCluster)
		b.outputs[fuzzCluster] = out
		s := fuzzServer(relaywire.ModeTLS, b, nil)
		st := &memStream[relayv1.PullRequest, relayv1.PullResponse]{ctx: tlsModeContext(t), in: [][]byte{m0, m1, m2}}
		_ = s.Pull(st)

		var h relayv1.PullRequest
		_ = proto.Unmarshal(m0, &h)
		for _, m := range st.sent {
			d := m.GetSnapshot()
			if d == nil {
				continue
			}
			var from *snapshot.Snapshot
			if !d.GetFull() {
				if d.GetBaseHash() != base.Hash || !maps.Equal(h.GetHello().GetHeld().GetResourceHashes(), base.ResourceHashes()) {
					// The agent's base is only known by the hashes it announced; an agent
					// whose hashes disagree with each other finds the mismatch on applying.
					continue
				}
				from = base
			}
			got, err := snapshot.Apply(from, relaywire.FromProto(d))
			if err != nil || got.Hash != out.Hash {
				t.Fatalf("sent delta (full %v) does not give the output: %v", d.GetFull(), err)
			}
		}
		for _, c := range append(b.calls(&b.acks), b.calls(&b.nacks)...) {
			if c.hash != out.Hash {
				t.Fatalf("recorded an answer for %s, the output is %s", c.hash, out.Hash)
			}
		}
	})
}

// FuzzRegister calls Register with any token, cluster and certificate signing request.
// Whatever the bytes: no panic; a certificate is issued only for the right token and a
// registered cluster, and it verifies against the CA and names exactly that cluster.
func FuzzRegister(f *testing.F) {
	ca, err := pki.NewCA(trustDomain, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range []string{fuzzCluster, "remote", "Local", ""} {
		csr, err := pki.NewCSR(key, c)
		if err != nil {
			continue
		}
		f.Add(token, fuzzCluster, csr)
		f.Add(token, c, csr)
	}
	f.Add("wrong", fuzzCluster, []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, tok, cluster string, csr []byte) {
		b := newBackend(fuzzCluster, "remote")
		s := fuzzServer(relaywire.ModeMTLS, b, ca)
		resp, err := s.Register(t.Context(), &relayv1.RegisterRequest{Token: tok, Cluster: cluster, CsrPem: csr})
		if err != nil {
			if _, ok := status.FromError(err); !ok {
				t.Fatalf("error %v is not a gRPC status", err)
			}
			return
		}
		if tok != token || !b.IsRegistered(cluster) {
			t.Fatalf("certificate issued for token %q, cluster %q", tok, cluster)
		}
		cert, err := pki.ParseCertPEM(resp.GetCertificatePem())
		if err != nil {
			t.Fatalf("issued certificate does not parse: %v", err)
		}
		if err := ca.Verify(cert, x509.ExtKeyUsageClientAuth); err != nil {
			t.Fatalf("issued certificate does not verify: %v", err)
		}
		if got, err := pki.ClusterFromCert(cert, trustDomain); err != nil || got != cluster {
			t.Fatalf("issued certificate names cluster %q (%v), registered %q", got, err, cluster)
		}
	})
}
