package relay

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/meshrelay/meshrelay/internal/relaywire"
)

// One cluster has one live input stream (docs/adr/0002-one-input-stream-per-cluster.md): the
// first agent to open a stream for a cluster holds it until all of that agent's streams have
// ended; the streams of another agent of the same cluster are refused meanwhile. An agent is
// told apart by the instance it sends in relaywire.MetadataAgentInstance (random per process), else by
// its connection. The same instance coming back on a new connection (its old one is dead but
// not yet noticed here) replaces its own old streams at once. The version comes from Hello.

// RefusalMemory is how long a refused duplicate stays in the server's /status (and so in
// `meshrelay check`) after its last refused attempt.
const RefusalMemory = 2 * time.Minute

// sameAgent reports whether a and b are the same agent process: by instance when either
// sent one, else by connection.
func sameAgent(a, b relaywire.Agent) bool {
	if a.Instance != "" || b.Instance != "" {
		return a.Instance == b.Instance
	}
	return a.Peer == b.Peer
}

// Refusal is the last refused duplicate of a cluster.
type Refusal struct {
	relaywire.Agent
	At     time.Time        `json:"at"`
	Count  int              `json:"count"` // refused streams since this server started
	Holder relaywire.Holder `json:"holder"`
}

// errSuperseded ends the streams of an agent that came back on a new connection.
var errSuperseded = errors.New("the same agent opened new streams on another connection")

// stream is one open Push or Pull stream.
type stream struct {
	push   bool
	cancel context.CancelCauseFunc
	leaf   *x509.Certificate // the client certificate it was opened with (nil in tls mode)
}

// holding is the agent holding a cluster and its open streams.
type holding struct {
	agent   relaywire.Agent
	since   time.Time
	streams map[*stream]struct{}
}

// sessions tracks which agent holds each cluster.
type sessions struct {
	now     func() time.Time
	mu      sync.Mutex // guards held and refused
	held    map[string]*holding
	refused map[string]*Refusal
}

func newSessions() *sessions {
	return &sessions{now: time.Now, held: map[string]*holding{}, refused: map[string]*Refusal{}}
}

// claim registers a stream of agent for cluster. It returns the stream (to release and to
// check with whileHolding), or, when another agent holds the cluster, that holder and ok false.
// Old streams of the same agent on another connection are cancelled.
func (s *sessions) claim(cluster string, agent relaywire.Agent, push bool, leaf *x509.Certificate, cancel context.CancelCauseFunc) (st *stream, holder relaywire.Holder, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[cluster]
	switch {
	case h == nil:
		h = &holding{agent: agent, since: s.now().UTC(), streams: map[*stream]struct{}{}}
		s.held[cluster] = h
	case !sameAgent(h.agent, agent):
		r := s.refused[cluster]
		if r == nil {
			r = &Refusal{}
			s.refused[cluster] = r
		}
		holder = relaywire.Holder{Agent: h.agent, Since: h.since}
		r.Agent, r.At, r.Holder = agent, s.now().UTC(), holder
		r.Count++
		return nil, holder, false
	case h.agent.Peer != agent.Peer:
		for old := range h.streams {
			old.cancel(errSuperseded)
		}
		h.agent, h.since, h.streams = agent, s.now().UTC(), map[*stream]struct{}{}
	}
	st = &stream{push: push, cancel: cancel, leaf: leaf}
	h.streams[st] = struct{}{}
	return st, relaywire.Holder{Agent: h.agent, Since: h.since}, true
}

// release ends a stream; the cluster is free once its holder has no stream left.
func (s *sessions) release(cluster string, st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[cluster]
	if h == nil {
		return
	}
	delete(h.streams, st)
	if len(h.streams) == 0 {
		delete(s.held, cluster)
	}
}

// whileHolding runs f if st still belongs to the cluster's holder, and reports whether it
// did: a replaced stream never writes the cluster's input.
func (s *sessions) whileHolding(cluster string, st *stream, f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[cluster]
	if h == nil {
		return false
	}
	if _, ok := h.streams[st]; !ok {
		return false
	}
	f()
	return true
}

// cut cancels every open stream for which cause returns a reason, and returns, per cluster,
// the reason its streams were closed for.
func (s *sessions) cut(cause func(cluster string, leaf *x509.Certificate) *cutError) map[string]*cutError {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*cutError{}
	for cluster, h := range s.held {
		for st := range h.streams {
			if c := cause(cluster, st.leaf); c != nil {
				st.cancel(c)
				out[cluster] = c
			}
		}
	}
	return out
}

// pending returns, sorted, the clusters with an open stream whose certificate is outdated.
func (s *sessions) pending(outdated func(*x509.Certificate) bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for cluster, h := range s.held {
		for st := range h.streams {
			if outdated(st.leaf) {
				out = append(out, cluster)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// Connection is what this server knows of one cluster's agents.
type Connection struct {
	Push  int       `json:"push"`
	Pull  int       `json:"pull"`
	Since time.Time `json:"since,omitzero"`
	Peer  string    `json:"peer,omitempty"`
	// Instance and Version name the agent holding the streams.
	Instance string `json:"instance,omitempty"`
	Version  string `json:"version,omitempty"`
	// Refused is the last agent refused because another held the cluster, within
	// RefusalMemory.
	Refused *Refusal `json:"refusedDuplicate,omitempty"`
	// Report is what the holding agent last reported wrong with its own parts (nil: nothing).
	Report *AgentReport `json:"report,omitempty"`
	// CertificateNotAfter is when the newest client certificate of the holding agent's open
	// streams expires, as presented at the mutual TLS handshake (zero in tls mode).
	CertificateNotAfter time.Time `json:"certificateNotAfter,omitzero"`
}

func (s *sessions) connections() map[string]Connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Connection, len(s.held))
	for cluster, h := range s.held {
		c := Connection{Since: h.since, Peer: h.agent.Peer, Instance: h.agent.Instance, Version: h.agent.Version}
		for st := range h.streams {
			if st.push {
				c.Push++
			} else {
				c.Pull++
			}
			if st.leaf != nil && st.leaf.NotAfter.After(c.CertificateNotAfter) {
				c.CertificateNotAfter = st.leaf.NotAfter.UTC()
			}
		}
		out[cluster] = c
	}
	now := s.now()
	for cluster, r := range s.refused {
		if now.Sub(r.At) > RefusalMemory {
			continue
		}
		c := out[cluster]
		rc := *r
		c.Refused = &rc
		out[cluster] = c
	}
	return out
}

// agentOf names the agent of a stream from its peer address, metadata and the version its
// hello reports.
func agentOf(ctx context.Context, version string) relaywire.Agent {
	a := relaywire.Agent{Peer: peerAddr(ctx), Version: version}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(relaywire.MetadataAgentInstance); len(v) > 0 {
		a.Instance = v[0]
	}
	return a
}
