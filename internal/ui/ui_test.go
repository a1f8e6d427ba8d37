package ui

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/plane"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/resource"
)

func newTestServer(t *testing.T, token *string, view func() View) *httptest.Server {
	mux := http.NewServeMux()
	Register(mux, Config{Token: func() (string, error) { return *token, nil }, TLS: true, View: view, Interval: 20 * time.Millisecond}, slog.New(slog.DiscardHandler))
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func noRedirect(c *http.Client) *http.Client {
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// The token is taken once and becomes an HttpOnly, Secure, SameSite=Strict cookie that is
// not the token; a wrong token, no cookie or a rotated token get no page.
func TestLoginCookie(t *testing.T) {
	token := "s3cret"
	srv := newTestServer(t, &token, func() View { return View{Replica: "r1"} })
	c := noRedirect(srv.Client())

	resp, err := c.Get(srv.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("/ui without a session: %s to %q, want a redirect to the login form", resp.Status, resp.Header.Get("Location"))
	}
	resp, err = c.PostForm(srv.URL+"/ui/login", url.Values{"token": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong token: %s with cookies %v", resp.Status, resp.Cookies())
	}
	resp, err = c.PostForm(srv.URL+"/ui/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("login: %s with cookies %v", resp.Status, cookies)
	}
	ck := cookies[0]
	if ck.Name != CookieName || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui" || strings.Contains(ck.Value, token) {
		t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/ui, not holding the token", ck)
	}
	get := func(path string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.AddCookie(ck)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := get("/ui"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "replica <strong>r1</strong>") {
		t.Fatalf("/ui with the session: %s\n%s", resp.Status, body)
	}
	token = "rotated"
	if resp, _ := get("/ui"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("/ui after the token rotated: %s, want the login form", resp.Status)
	}
	if resp, _ := get("/ui/events"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/ui/events after the token rotated: %s, want 401", resp.Status)
	}
}

// The event stream sends the body again when what it shows changes, and ends with the
// request.
func TestEventsFollowChanges(t *testing.T) {
	token := "t"
	replica := make(chan string, 1)
	replica <- "first"
	cur := "first"
	srv := newTestServer(t, &token, func() View {
		select {
		case cur = <-replica:
		default:
		}
		return View{Clusters: []ClusterView{{Name: "east", Conn: cur}}}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // a stream that never changes ends here
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/ui/events", nil)
	req.AddCookie(&http.Cookie{Name: CookieName, Value: session(token)})
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	want := []string{"first", "disconnected"}
	for sc.Scan() && len(want) > 0 {
		if strings.Contains(sc.Text(), `class="conn badge `+want[0]+`"`) {
			want = want[1:]
			if len(want) == 1 {
				replica <- "disconnected"
			}
		}
	}
	if len(want) > 0 {
		t.Fatalf("the stream never showed %q: %v", want[0], sc.Err())
	}
}

func obj(t *testing.T, yaml string) resource.Object {
	t.Helper()
	objs, errs := resource.Parse("test", []byte(yaml))
	if len(errs) > 0 || len(objs) != 1 {
		t.Fatalf("parse: %v", errs)
	}
	return objs[0]
}

// The failover view serves from the lowest priority whose clusters are all connected.
func TestBuildFailoverAndClusters(t *testing.T) {
	scheme := obj(t, `apiVersion: meshrelay.io/v1alpha1
kind: FailoverScheme
metadata: {name: fs, namespace: default}
spec:
  primary: {clusterName: east, name: svc, namespace: default}
  failoverGroups:
  - priorityGroup: [{cluster: west, upstreams: [{name: svc, namespace: default}]}]
`)
	conn := relay.Connection{Push: 1, Pull: 1, Since: time.Unix(100, 0)}
	st := configapi.ServerStatus{Status: reconcile.Status{Clusters: []reconcile.ClusterStatus{{Name: "east", InSync: true, OutputVersion: 2, AckedVersion: 2}, {Name: "west", OutputVersion: 3, AckedVersion: 2}}}}
	st.Plane = plane.Status{Servers: []plane.Server{{ID: "r1", Clusters: []plane.Cluster{{Name: "east", Connection: conn}, {Name: "west", Connection: conn}}}}}
	v := Build(Inputs{Now: time.Unix(200, 0), Status: st, Config: []resource.Object{scheme}})
	if got := v.Failover[0].Priorities[0]; !got.Serving {
		t.Errorf("both connected: priority 0 does not serve: %+v", v.Failover)
	}
	if v.Clusters[0].Conn != "connected" || v.Clusters[0].Sync != "in sync" || v.Clusters[1].Sync != "out of sync" {
		t.Errorf("clusters: %+v", v.Clusters)
	}
	st.Plane.Servers[0].Clusters = []plane.Cluster{{Name: "east", Connection: relay.Connection{Push: 1}}, {Name: "west", Connection: conn}}
	v = Build(Inputs{Now: time.Unix(200, 0), Status: st, Config: []resource.Object{scheme}})
	if p := v.Failover[0].Priorities; p[0].Serving || !p[1].Serving {
		t.Errorf("east's pull stream gone: want priority 1 serving: %+v", p)
	}
	if c := v.Clusters[0]; c.Conn != "partial" || c.Sync != "last in sync" || len(c.Problems) == 0 || !strings.Contains(c.Problems[0], "stalled") {
		t.Errorf("east with one stream: %+v", c)
	}
	var stalled bool
	for _, h := range v.Health {
		stalled = stalled || h.Name == "stalled streams" && !h.OK && strings.Contains(h.Detail, "east on r1")
	}
	if !stalled {
		t.Errorf("health does not name east's stalled stream: %+v", v.Health)
	}
}
