package ha_test

import (
	"testing"

	"github.com/meshrelay/meshrelay/internal/deptest"
)

// TestStoreIndependence keeps HA on its interfaces: the coordinator and the mesh identity
// issuance know no store client, and the Kubernetes Lease knows nothing of Redis (like
// tailscale's deptest).
func TestStoreIndependence(t *testing.T) {
	const redis, redisstore, clientGo = "github.com/redis", "github.com/meshrelay/meshrelay/internal/snapshot/redisstore", "k8s.io/client-go"
	for pkg, forbidden := range map[string][]string{
		".":            {redis, redisstore, clientGo, "github.com/meshrelay/meshrelay/internal/kubelease", "google.golang.org/grpc"},
		"../kubelease": {redis, redisstore, "github.com/meshrelay/meshrelay/internal/ha"},
		"./kubeha":     {redis, redisstore},
		"../meshcerts": {redis, redisstore, clientGo},
	} {
		deptest.Forbid(t, pkg, deptest.Deps(t, pkg), forbidden...)
	}
}
