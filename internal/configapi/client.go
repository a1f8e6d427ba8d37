package configapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Client calls a management server's admin API.
type Client struct {
	Base  string // e.g. https://127.0.0.1:9901
	Token string // the admin token the config API needs
	HTTP  *http.Client
	// trust names what verifies the server's certificate, for errors.
	trust string
}

// ErrCAFile marks the errors of NewClient about its CA file (the rest are about the address).
var ErrCAFile = errors.New("admin CA file")

// NewClient returns a client for a management server's admin API at addr that presents
// token to the config API. addr is "host:port" or "https://host:port" (HTTPS, the
// server's default), or "http://host:port" for a loopback server started with
// --admin-plaintext; plain HTTP to any other host is refused, as it would send the token in
// clear text. The server's certificate must chain to a certificate of caFile (PEM; the
// server's <data-dir>/relay-ca.crt, or the CA of its --admin-tls-cert-file), or, with
// caFile empty, to the system's roots.
func NewClient(addr, token, caFile string) (*Client, error) {
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%q: want host:port, https://host:port, or http://host:port on loopback", addr)
	}
	c := &Client{Base: strings.TrimRight(addr, "/"), Token: token, trust: "the system's root CAs"}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	switch u.Scheme {
	case "https":
		t := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrCAFile, err)
			}
			t.RootCAs = x509.NewCertPool()
			if !t.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%w %s: no PEM certificate in it", ErrCAFile, caFile)
			}
			c.trust = "the CA file " + caFile
		}
		tr.TLSClientConfig = t
	case "http":
		if !flagcheck.Loopback(u.Hostname()) {
			return nil, fmt.Errorf("%s: plain HTTP is allowed to a loopback address only (the admin token would cross the network in clear text); use https://%s", addr, u.Host)
		}
	default:
		return nil, fmt.Errorf("%s: scheme %q, want https (the default) or http on loopback", addr, u.Scheme)
	}
	c.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	return c, nil
}

// explain turns a failed request into an error that says what to do: a certificate the
// client does not trust names the server and the CA it was checked against.
func (c *Client) explain(err error) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("management server at %s presents a certificate that %s does not verify (%s): "+
			"give --admin-ca-file the CA that issued the server's admin certificate (the server's <data-dir>/relay-ca.crt, "+
			"or the CA of its --admin-tls-cert-file): %w", c.Base, c.trust, certName(unknown.Cert), err)
	case errors.As(err, &host):
		return fmt.Errorf("management server at %s presents a certificate for other names (%s): connect to one of them, "+
			"or add this name to the server's --relay-server-names: %w", c.Base, strings.Join(certNames(host.Certificate), ", "), err)
	case errors.As(err, &invalid):
		return fmt.Errorf("management server at %s presents a certificate that is not valid now (checked against %s): %w", c.Base, c.trust, err)
	case errors.As(err, &record), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"): // net/http's untyped error
		return fmt.Errorf("management server at %s does not speak TLS (started with --admin-plaintext? then use --server http://HOST:PORT on loopback): %w", c.Base, err)
	}
	return fmt.Errorf("management server at %s unreachable: %w", c.Base, err)
}

func certName(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	return fmt.Sprintf("subject %q issued by %q", c.Subject.CommonName, c.Issuer.CommonName)
}

func certNames(c *x509.Certificate) []string {
	if c == nil {
		return nil
	}
	names := append([]string{}, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
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
		return 0, nil, c.explain(err)
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

// DoJSON sends in (nil: no body) as JSON to path and decodes a 2xx answer into out (nil:
// ignored); any other answer is an error carrying the server's message.
func (c *Client) DoJSON(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
	}
	code, b, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	if code < 200 || code > 299 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, code, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Ready reads /readyz: nil when the server is ready, else why not.
func (c *Client) Ready(ctx context.Context) error {
	code, b, err := c.do(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("not ready: HTTP %d: %s", code, strings.TrimSpace(string(b)))
	}
	return nil
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
