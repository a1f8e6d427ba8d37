package agent_test

import (
	"testing"

	"github.com/meshrelay/meshrelay/internal/deptest"
)

const module = "github.com/meshrelay/meshrelay/"

// serverOnly are the management server's packages: the relay server and the reconciler, the
// translator, the stores, the config API and CR source, the plane view and the server's
// composition root. The agent shares only the protocol (api/relay/v1, internal/relaywire),
// the Envoy resource codec (internal/envoyres) and the generic packages (the agent's replicas
// elect their leader with internal/kubelease, which knows nothing of the server's HA).
var serverOnly = []string{
	module + "internal/relay",
	module + "internal/reconcile",
	module + "internal/translate",
	module + "internal/configapi",
	module + "internal/crsource",
	module + "internal/plane",
	module + "internal/snapshot/redisstore",
	module + "internal/snapshot/boltstore",
	module + "internal/snapshot/memstore",
	module + "internal/meshcerts",
	module + "internal/ha",
	module + "internal/app/server",
	module + "internal/cli",
	module + "internal/bench",
	"github.com/redis",
}

// TestAgentImportsNoServerCode: the agent (its composition root, and through it the relay
// client, the sinks, the xDS server and discovery) never imports server code.
func TestAgentImportsNoServerCode(t *testing.T) {
	for _, pkg := range []string{module + "internal/app/agent", module + "internal/agent"} {
		deptest.Forbid(t, pkg, deptest.Deps(t, pkg), serverOnly...)
	}
}
