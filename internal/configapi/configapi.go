// Package configapi is the management server's HTTP configuration API — apply, delete and
// list resources, read live snapshots — and the client the CLI uses to call it.
package configapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/meshrelay/meshrelay/internal/admin"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Backend is what the API needs from the server's core.
type Backend interface {
	Apply(ctx context.Context, objs []resource.Object) error
	Delete(ctx context.Context, key string) error
	Config() []resource.Object
	Input(cluster string) *snapshot.Snapshot
	Output(cluster string) *snapshot.Snapshot
	// ResourceStatus returns problems the last translation found, by resource (Object.String).
	ResourceStatus() map[string][]string
}

// ApplyResult answers an apply: what was stored and what was refused.
type ApplyResult struct {
	Applied []string `json:"applied"`
	Errors  []string `json:"errors,omitempty"`
}

// Item is one configuration resource as listed.
type Item struct {
	Key    string          `json:"key"`
	Kind   string          `json:"kind"`
	Name   string          `json:"name"`
	Object json.RawMessage `json:"object"`
	// Status lists problems the last translation found with this resource; empty is fine.
	Status []string `json:"status,omitempty"`
}

const maxBody = 16 << 20

// TokenFileName is the admin token's file in the server's data directory, where the server
// generates it without --admin-token-file and where the CLI looks for it by default.
const TokenFileName = "admin-token"

// Register adds the API routes to an admin server. Every route needs the header
// "Authorization: Bearer <token>" with the token that token returns at the time of the
// request (so a rotated token file takes effect at once).
func Register(adm *admin.Server, b Backend, token func() (string, error)) {
	s := authenticated{adm, token}
	s.Handle("POST /api/v1/apply", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			admin.WriteJSON(w, http.StatusBadRequest, ApplyResult{Errors: []string{"read request: " + err.Error()}})
			return
		}
		source := r.URL.Query().Get("source")
		if source == "" {
			source = "request"
		}
		objs, errs := resource.Parse(source, data)
		res := ApplyResult{Errors: errStrings(errs)}
		if err := b.Apply(r.Context(), objs); err != nil {
			res.Errors = append(res.Errors, err.Error())
			admin.WriteJSON(w, http.StatusServiceUnavailable, res)
			return
		}
		for _, o := range objs {
			res.Applied = append(res.Applied, o.String())
		}
		code := http.StatusOK
		if len(res.Errors) > 0 {
			code = http.StatusUnprocessableEntity
		}
		admin.WriteJSON(w, code, res)
	}))
	s.Handle("DELETE /api/v1/resources/{kind}/{name}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind, ok := resource.CanonicalKind(r.PathValue("kind"))
		if !ok {
			http.Error(w, fmt.Sprintf("unknown kind %q", r.PathValue("kind")), http.StatusBadRequest)
			return
		}
		ns := r.URL.Query().Get("namespace")
		err := b.Delete(r.Context(), resource.Key(kind, ns, r.PathValue("name")))
		switch {
		case errors.Is(err, snapshot.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	s.Handle("GET /api/v1/resources", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := r.URL.Query().Get("kind")
		if kind != "" {
			k, ok := resource.CanonicalKind(kind)
			if !ok {
				http.Error(w, fmt.Sprintf("unknown kind %q (known: %s)", kind, strings.Join(resource.Kinds(), ", ")), http.StatusBadRequest)
				return
			}
			kind = k
		}
		name := r.URL.Query().Get("name")
		items := []Item{}
		status := b.ResourceStatus()
		for _, o := range b.Config() {
			if (kind == "" || o.Kind == kind) && (name == "" || o.Name == name) {
				items = append(items, Item{Key: o.Key(), Kind: o.Kind, Name: o.Name, Object: o.Raw, Status: status[o.String()]})
			}
		}
		sort.Slice(items, func(i, j int) bool { return items[i].Key < items[j].Key })
		admin.WriteJSON(w, http.StatusOK, items)
	}))
	s.Handle("GET /api/v1/snapshots/{cluster}/{kind}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var snap *snapshot.Snapshot
		switch r.PathValue("kind") {
		case string(snapshot.Input):
			snap = b.Input(r.PathValue("cluster"))
		case string(snapshot.Output):
			snap = b.Output(r.PathValue("cluster"))
		default:
			http.Error(w, "snapshot kind must be input or output", http.StatusBadRequest)
			return
		}
		if snap == nil {
			http.Error(w, fmt.Sprintf("no %s snapshot for cluster %q", r.PathValue("kind"), r.PathValue("cluster")), http.StatusNotFound)
			return
		}
		admin.WriteJSON(w, http.StatusOK, snap)
	}))
}

// authenticated registers handlers behind the bearer token check.
type authenticated struct {
	adm   *admin.Server
	token func() (string, error)
}

func (a authenticated) Handle(pattern string, h http.Handler) {
	a.adm.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want, err := a.token()
		if err != nil {
			http.Error(w, "admin token unavailable on the server: "+err.Error(), http.StatusInternalServerError)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshrelay admin"`)
			reason := "no admin token"
			if ok {
				reason = "wrong admin token"
			}
			http.Error(w, reason+": the config API needs 'Authorization: Bearer <token>' with the server's admin token "+
				"(its --admin-token-file, by default <data-dir>/"+TokenFileName+"; the CLI takes --admin-token-file or MESHRELAY_ADMIN_TOKEN)",
				http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
}

func errStrings(errs []error) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}
