package gateway_test

import (
	"testing"

	"github.com/meshrelay/meshrelay/internal/deptest"
)

// TestGatewayImportsNoTranslator: the gateway reads xDS from the agent and never imports the
// translator, nor the server's relay, reconciler or store; nor do its tests, which decode
// rendered outputs with internal/envoyres.
func TestGatewayImportsNoTranslator(t *testing.T) {
	const module = "github.com/meshrelay/meshrelay/"
	deptest.Forbid(t, "internal/gateway", deptest.DepsWithTests(t, "."),
		module+"internal/translate", module+"internal/reconcile", module+"internal/relay",
		module+"internal/snapshot/redisstore", module+"internal/app/server")
}
