// Package relaywire is the relay protocol as both of its ends speak it: the conversion of
// snapshot deltas to and from their api/relay/v1 messages (convert.go), the protocol's
// limits and the gRPC call options that apply them (limit.go), the transport modes and the
// gRPC metadata keys of a stream (wire.go), the refusal of a duplicate agent as a
// google.rpc.ErrorInfo (refusal.go), the stale-epoch NACK (epoch.go) and the background
// reader of a stream (receive.go).
//
// The server (internal/relay) and the agent (internal/agent) both import it, so that the
// agent never imports server code; it holds no state and starts nothing.
package relaywire

// Modes of relay transport security.
const (
	// ModeMTLS (default): agents register with the token once, then authenticate with
	// their cluster certificate.
	ModeMTLS = "mtls"
	// ModeTLS: agents verify the server only and send the token on every stream.
	ModeTLS = "tls"
)

// MetadataToken and MetadataCluster are the gRPC metadata keys used in tls mode.
const (
	MetadataToken   = "x-meshrelay-token"
	MetadataCluster = "x-meshrelay-cluster"
)

// MetadataAgentInstance is the metadata key of the random name an agent process gives its
// streams; it identifies, it does not authenticate (the cluster comes from the certificate or
// the token).
const MetadataAgentInstance = "x-meshrelay-agent-instance"
