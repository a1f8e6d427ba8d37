package configapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RevokeResult answers POST /api/v1/clusters/{name}/revoke.
type RevokeResult struct {
	Cluster string `json:"cluster"`
	// RevokedBefore: the cluster's certificates issued before it are refused.
	RevokedBefore time.Time `json:"revokedBefore"`
}

// RotateRequest is the body of POST /api/v1/ca/relay/rotate.
type RotateRequest struct {
	// Action is "start" (trust both CAs, sign with the new one; the server drops the old one
	// once every connected agent holds a certificate of the new one) or "complete" (drop the
	// old CA now, whatever agents still hold its certificates).
	Action string `json:"action"`
	// CACertPEM and CAKeyPEM are the new CA, for a server started with --relay-ca-cert
	// (default: the server generates it).
	CACertPEM string `json:"caCertPem,omitempty"`
	CAKeyPEM  string `json:"caKeyPem,omitempty"`
}

// RotateRelayCA sends a relay CA rotation step; v receives the rotation's status.
func (c *Client) RotateRelayCA(ctx context.Context, req RotateRequest, v any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return c.post(ctx, "/api/v1/ca/relay/rotate", body, "relay CA rotation "+req.Action, v)
}

// RevokeCluster revokes the relay certificates of cluster issued until now; v receives the
// answer.
func (c *Client) RevokeCluster(ctx context.Context, cluster string, v any) error {
	return c.post(ctx, "/api/v1/clusters/"+url.PathEscape(cluster)+"/revoke", nil, "revoke cluster "+cluster, v)
}

func (c *Client) post(ctx context.Context, path string, body []byte, what string, v any) error {
	code, b, err := c.do(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", what, code, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, v)
}
