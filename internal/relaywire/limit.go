package relaywire

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
)

// Limits of the relay protocol. A delta travels as one gRPC message, so MaxMessageBytes
// bounds a cluster's whole input or output when it is sent in full (gRPC's default of 4 MiB
// would cut off a cluster of a few thousand services); MaxResources bounds the resources
// of one snapshot.
const (
	MaxMessageBytes = 64 << 20
	MaxResources    = 200_000
)

// CallOptions are the relay's gRPC call options for agents: the message size limit.
func CallOptions() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes))
}

// CheckSize says clearly why a delta cannot travel: it is over the message limit or holds
// too many resources. what names it ("output of cluster east").
func CheckSize(what string, m *relayv1.SnapshotDelta, maxBytes int) error {
	if n := len(m.GetUpserts()); n > MaxResources {
		return fmt.Errorf("%s holds %d resources, over the relay's limit of %d", what, n, MaxResources)
	}
	if n := proto.Size(m); n > maxBytes {
		return fmt.Errorf("%s is %d bytes as one relay message, over the limit of %d bytes (%d MiB)", what, n, maxBytes, maxBytes>>20)
	}
	return nil
}
