package relay

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// One cluster has one live input stream (docs/adr/0002-one-input-stream-per-cluster.md): the
// first agent to open a stream for a cluster holds it until all of that agent's streams have
// ended; the streams of another agent of the same cluster are refused meanwhile. An agent is
// told apart by the instance it sends in MetadataAgentInstance (random per process), else by
// its connection. The same instance coming back on a new connection (its old one is dead but
// not yet noticed here) replaces its own old streams at once. The version comes from Hello.

// MetadataAgentInstance is the metadata key of the random name an agent process gives its
// streams; it identifies, it does not authenticate (the cluster comes from the certificate or
// the token).
const MetadataAgentInstance = "x-meshrelay-agent-instance"

// Refusal reasons of the relay error details (google.rpc.ErrorInfo).
const (
	errorDomain = "meshrelay.io"
	// ReasonDuplicateAgent: another agent holds the cluster's streams.
	ReasonDuplicateAgent = "DUPLICATE_AGENT"
)

// RefusalMemory is how long a refused duplicate stays in the server's /status (and so in
// `meshrelay check`) after its last refused attempt.
const RefusalMemory = 2 * time.Minute

// Agent names one agent process as the server sees it.
type Agent struct {
	Peer     string `json:"peer"`
	Instance string `json:"instance,omitempty"`
	Version  string `json:"version,omitempty"`
}

func (a Agent) same(b Agent) bool {
	if a.Instance != "" || b.Instance != "" {
		return a.Instance == b.Instance
	}
	return a.Peer == b.Peer
}

// Holder is the agent holding a cluster's streams, as told to a refused agent.
type Holder struct {
	Agent
	Since time.Time `json:"since"`
}

// Refusal is the last refused duplicate of a cluster.
type Refusal struct {
	Agent
	At     time.Time `json:"at"`
	Count  int       `json:"count"` // refused streams since this server started
	Holder Holder    `json:"holder"`
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
	agent   Agent
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
func (s *sessions) claim(cluster string, agent Agent, push bool, leaf *x509.Certificate, cancel context.CancelCauseFunc) (st *stream, holder Holder, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held[cluster]
	switch {
	case h == nil:
		h = &holding{agent: agent, since: s.now().UTC(), streams: map[*stream]struct{}{}}
		s.held[cluster] = h
	case !h.agent.same(agent):
		r := s.refused[cluster]
		if r == nil {
			r = &Refusal{}
			s.refused[cluster] = r
		}
		holder = Holder{Agent: h.agent, Since: h.since}
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
	return st, Holder{Agent: h.agent, Since: h.since}, true
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
func agentOf(ctx context.Context, version string) Agent {
	a := Agent{Peer: peerAddr(ctx), Version: version}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(MetadataAgentInstance); len(v) > 0 {
		a.Instance = v[0]
	}
	return a
}

// duplicateError is the error a refused agent receives: it names the holder in the message
// and, for programs, in a google.rpc.ErrorInfo (DuplicateHolder reads it).
func duplicateError(cluster string, h Holder) error {
	msg := fmt.Sprintf("cluster %q is held by another agent (peer %s, instance %s, version %s, since %s): one cluster has one live agent session; this agent retries and takes over when that one disconnects; stop the duplicate agent or give it its own --cluster",
		cluster, h.Peer, orUnknown(h.Instance), orUnknown(h.Version), h.Since.Format(time.RFC3339))
	st, err := status.New(codes.AlreadyExists, msg).WithDetails(&errdetails.ErrorInfo{
		Reason: ReasonDuplicateAgent, Domain: errorDomain,
		Metadata: map[string]string{"cluster": cluster, "peer": h.Peer, "instance": h.Instance, "version": h.Version, "since": h.Since.Format(time.RFC3339Nano)},
	})
	if err != nil {
		return status.Error(codes.AlreadyExists, msg)
	}
	return st.Err()
}

// DuplicateHolder reports whether err is a refusal because another agent holds the cluster,
// and names that agent.
func DuplicateHolder(err error) (Holder, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.AlreadyExists {
		return Holder{}, false
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain || info.GetReason() != ReasonDuplicateAgent {
			continue
		}
		m := info.GetMetadata()
		since, _ := time.Parse(time.RFC3339Nano, m["since"])
		return Holder{Agent: Agent{Peer: m["peer"], Instance: m["instance"], Version: m["version"]}, Since: since}, true
	}
	return Holder{}, false
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
