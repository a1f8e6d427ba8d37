package relaywire

import (
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the domain of the relay's error details (google.rpc.ErrorInfo); the reasons
// are ReasonDuplicateAgent here and the server's own (relay.ReasonCARotation).
const (
	ErrorDomain = "meshrelay.io"
	// ReasonDuplicateAgent: another agent holds the cluster's streams.
	ReasonDuplicateAgent = "DUPLICATE_AGENT"
)

// Agent names one agent process as the server sees it.
type Agent struct {
	Peer     string `json:"peer"`
	Instance string `json:"instance,omitempty"`
	Version  string `json:"version,omitempty"`
}

// Holder is the agent holding a cluster's streams, as told to a refused agent.
type Holder struct {
	Agent
	Since time.Time `json:"since"`
}

// DuplicateError is the error a refused agent receives: it names the holder in the message
// and, for programs, in a google.rpc.ErrorInfo (DuplicateHolder reads it).
func DuplicateError(cluster string, h Holder) error {
	msg := fmt.Sprintf("cluster %q is held by another agent (peer %s, instance %s, version %s, since %s): one cluster has one live agent session; this agent retries and takes over when that one disconnects; stop the duplicate agent or give it its own --cluster",
		cluster, h.Peer, orUnknown(h.Instance), orUnknown(h.Version), h.Since.Format(time.RFC3339))
	st, err := status.New(codes.AlreadyExists, msg).WithDetails(&errdetails.ErrorInfo{
		Reason: ReasonDuplicateAgent, Domain: ErrorDomain,
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
		if !ok || info.GetDomain() != ErrorDomain || info.GetReason() != ReasonDuplicateAgent {
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
