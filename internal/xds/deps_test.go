package xds_test

import (
	"testing"

	"github.com/meshrelay/meshrelay/internal/deptest"
)

// TestXDSImportsNoTranslator: the agent's xDS server decodes outputs with internal/envoyres
// and never imports the translator that renders them, nor the server's relay, reconciler or
// store; nor do its tests.
func TestXDSImportsNoTranslator(t *testing.T) {
	const module = "github.com/meshrelay/meshrelay/"
	deptest.Forbid(t, "internal/xds", deptest.DepsWithTests(t, "."),
		module+"internal/translate", module+"internal/reconcile", module+"internal/relay",
		module+"internal/snapshot/redisstore", module+"internal/app/server")
}
