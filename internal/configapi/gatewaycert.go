package configapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/admin"
)

// GatewayCertRequest asks for the xDS client certificate of a gateway: the node it will send
// as its xDS node id, and a PEM CSR whose key stays with the gateway.
type GatewayCertRequest struct {
	Node string `json:"node"`
	CSR  string `json:"csr"`
}

// GatewayCert is an issued gateway certificate (PEM, leaf first) and the mesh CA bundle
// that verifies the cluster's agent.
type GatewayCert struct {
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	NotAfter    time.Time `json:"notAfter"`
}

// GatewayIssuer signs the CSR of a gateway node of cluster. It returns an error wrapping
// ErrUnknownCluster when no KubernetesCluster has that name, ErrBadRequest for a bad CSR or
// node.
type GatewayIssuer func(ctx context.Context, cluster, node string, csrPEM []byte) (GatewayCert, error)

// Errors of a GatewayIssuer.
var (
	ErrUnknownCluster = errors.New("cluster is not registered")
	ErrBadRequest     = errors.New("bad request")
)

// RegisterGatewayCertificates adds POST /api/v1/clusters/{cluster}/gateway-certificates,
// behind the admin token like every route of Register.
func RegisterGatewayCertificates(adm *admin.Server, issue GatewayIssuer, token func() (string, error)) {
	authenticated{adm, token}.Handle("POST /api/v1/clusters/{cluster}/gateway-certificates", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req GatewayCertRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			http.Error(w, "decode request: "+err.Error(), http.StatusBadRequest)
			return
		}
		res, err := issue(r.Context(), r.PathValue("cluster"), req.Node, []byte(req.CSR))
		switch {
		case errors.Is(err, ErrUnknownCluster):
			http.Error(w, err.Error(), http.StatusNotFound)
		case errors.Is(err, ErrBadRequest):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			admin.WriteJSON(w, http.StatusOK, res)
		}
	}))
}

// IssueGatewayCertificate asks the server to sign csrPEM for the gateway node of cluster.
func (c *Client) IssueGatewayCertificate(ctx context.Context, cluster, node string, csrPEM []byte) (GatewayCert, error) {
	body, err := json.Marshal(GatewayCertRequest{Node: node, CSR: string(csrPEM)})
	if err != nil {
		return GatewayCert{}, err
	}
	code, b, err := c.do(ctx, http.MethodPost, "/api/v1/clusters/"+url.PathEscape(cluster)+"/gateway-certificates", body)
	if err != nil {
		return GatewayCert{}, err
	}
	if code != http.StatusOK {
		return GatewayCert{}, fmt.Errorf("issue gateway certificate for cluster %s, node %s: HTTP %d: %s", cluster, node, code, strings.TrimSpace(string(b)))
	}
	var res GatewayCert
	if err := json.Unmarshal(b, &res); err != nil {
		return res, fmt.Errorf("decode gateway certificate: %w", err)
	}
	return res, nil
}
