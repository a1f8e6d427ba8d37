package configapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Client calls a management server's admin API.
type Client struct {
	Base  string // e.g. http://127.0.0.1:9901
	Token string // the admin token the config API needs
	HTTP  *http.Client
}

// NewClient returns a client for an admin address ("host:port" or a URL) that presents
// token to the config API.
func NewClient(addr, token string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{Base: strings.TrimRight(addr, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("management server at %s unreachable: %w", c.Base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read response from %s: %w", c.Base, err)
	}
	return resp.StatusCode, b, nil
}

// Apply sends manifests; source names them in error messages.
func (c *Client) Apply(ctx context.Context, source string, data []byte) (ApplyResult, error) {
	code, b, err := c.do(ctx, http.MethodPost, "/api/v1/apply?source="+url.QueryEscape(source), data)
	if err != nil {
		return ApplyResult{}, err
	}
	var res ApplyResult
	if err := json.Unmarshal(b, &res); err != nil {
		return res, fmt.Errorf("apply: HTTP %d: %s", code, strings.TrimSpace(string(b)))
	}
	return res, nil
}

// Delete removes an API-applied resource.
func (c *Client) Delete(ctx context.Context, kind, namespace, name string) error {
	code, b, err := c.do(ctx, http.MethodDelete, "/api/v1/resources/"+url.PathEscape(kind)+"/"+url.PathEscape(name)+"?namespace="+url.QueryEscape(namespace), nil)
	if err != nil {
		return err
	}
	if code != http.StatusNoContent {
		return fmt.Errorf("delete %s %s: %s", kind, name, strings.TrimSpace(string(b)))
	}
	return nil
}

// List returns configuration resources filtered by kind and name (both optional).
func (c *Client) List(ctx context.Context, kind, name string) ([]Item, error) {
	q := url.Values{}
	if kind != "" {
		q.Set("kind", kind)
	}
	if name != "" {
		q.Set("name", name)
	}
	code, b, err := c.do(ctx, http.MethodGet, "/api/v1/resources?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("get: %s", strings.TrimSpace(string(b)))
	}
	var items []Item
	return items, json.Unmarshal(b, &items)
}

// Snapshot reads a live input or output snapshot.
func (c *Client) Snapshot(ctx context.Context, cluster string, kind snapshot.Kind) (*snapshot.Snapshot, error) {
	code, b, err := c.do(ctx, http.MethodGet, "/api/v1/snapshots/"+url.PathEscape(cluster)+"/"+string(kind), nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s snapshot of %s: %s", kind, cluster, strings.TrimSpace(string(b)))
	}
	var s snapshot.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	return &s, nil
}

// Status reads /status into v.
func (c *Client) Status(ctx context.Context, v any) error {
	code, b, err := c.do(ctx, http.MethodGet, "/status", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("status: HTTP %d", code)
	}
	return json.Unmarshal(b, v)
}
