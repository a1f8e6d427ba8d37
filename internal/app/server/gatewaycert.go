package server

import (
	"context"
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// gatewayIssuer signs gateways' xDS client certificates with the mesh CA that signs now
// (docs/adr/0009), for clusters of the configuration only (docs/adr/0007); the CA returned is
// every mesh CA trusted now.
func gatewayIssuer(config func() []resource.Object, auth *pki.MeshAuthority, validity time.Duration) configapi.GatewayIssuer {
	return func(_ context.Context, cluster, node string, csrPEM []byte) (configapi.GatewayCert, error) {
		if _, ok := translate.Clusters(config())[cluster]; !ok {
			return configapi.GatewayCert{}, fmt.Errorf("%w: no KubernetesCluster named %q; register it first (meshrelay apply)", configapi.ErrUnknownCluster, cluster)
		}
		cert, notAfter, err := auth.Signer().SignGatewayCSR(csrPEM, cluster, node, validity)
		if err != nil {
			return configapi.GatewayCert{}, fmt.Errorf("%w: gateway %s of cluster %s: %w", configapi.ErrBadRequest, node, cluster, err)
		}
		return configapi.GatewayCert{Certificate: string(cert), CA: string(auth.Trust()), NotAfter: notAfter}, nil
	}
}
