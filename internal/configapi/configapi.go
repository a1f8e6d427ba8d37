// Package configapi is the management server's HTTP configuration API — apply, delete and
// list resources, read live snapshots — and the client the CLI uses to call it, with the
// documents both sides share: the server's /status (ServerStatus), the mesh CA rotation
// (meshca.go), the relay CA's rotation and revocations (relayca.go), and where a server keeps
// its admin token by default (DefaultDataDir, TokenFileName).
package configapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshrelay/meshrelay/internal/admin"
	"github.com/meshrelay/meshrelay/internal/changelog"
	"github.com/meshrelay/meshrelay/internal/changetrace"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
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

// Item is one resource as listed: a resource of the management configuration, or one a
// cluster's agent discovered (Cluster set).
type Item struct {
	Key    string          `json:"key"`
	Kind   string          `json:"kind"`
	Name   string          `json:"name"`
	Object json.RawMessage `json:"object"`
	// Cluster is the cluster whose agent discovered the resource (its input snapshot);
	// empty for the management configuration.
	Cluster string `json:"cluster,omitempty"`
	// Source says where a configuration resource comes from: "api", or the file of the
	// config directory; "discovered" for a cluster's resource.
	Source string `json:"source,omitempty"`
	// Status lists problems the last translation found with this resource; empty is fine.
	Status []string `json:"status,omitempty"`
}

// Sources of listed items.
const (
	SourceAPI        = "api"
	SourceDiscovered = "discovered"
)

// Limits of one apply request: its body and the resources in it.
const (
	maxBody      = 16 << 20
	maxResources = 10_000
)

// TokenFileName is the admin token's file in the server's data directory, where the server
// generates it without --admin-token-file and where the CLI looks for it by default.
const TokenFileName = "admin-token"

// Register adds the API routes to an admin server. Every route needs the header
// "Authorization: Bearer <token>" with the token that token returns at the time of the
// request (so a rotated token file takes effect at once). Each apply and delete starts a
// configuration change's trace in changes (nil: not traced).
func Register(adm *admin.Server, b Backend, token func() (string, error), changes *changetrace.Tracer) {
	s := authenticated{adm, token}
	s.Handle("POST /api/v1/apply", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			admin.WriteJSON(w, http.StatusRequestEntityTooLarge, ApplyResult{Errors: []string{
				fmt.Sprintf("request body over the limit of %d MiB: apply the resources in several smaller requests", maxBody>>20)}})
			return
		}
		if err != nil {
			admin.WriteJSON(w, http.StatusBadRequest, ApplyResult{Errors: []string{"read request: " + err.Error()}})
			return
		}
		source := r.URL.Query().Get("source")
		if source == "" {
			source = "request"
		}
		objs, errs := resource.Parse(source, data)
		if n := len(objs) + len(errs); n > maxResources {
			admin.WriteJSON(w, http.StatusRequestEntityTooLarge, ApplyResult{Errors: []string{
				fmt.Sprintf("%s holds %d resources, over the limit of %d per request: apply them in several requests", source, n, maxResources)}})
			return
		}
		res := ApplyResult{Errors: errStrings(errs)}
		ctx, span := changes.Apply(r.Context(), propagation.HeaderCarrier(r.Header), changelog.PathApply, source, len(objs))
		defer span.End()
		if err := b.Apply(ctx, objs); err != nil {
			res.Errors = append(res.Errors, err.Error())
			span.SetStatus(codes.Error, err.Error())
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
		key := resource.Key(kind, ns, r.PathValue("name"))
		ctx, span := changes.Apply(r.Context(), propagation.HeaderCarrier(r.Header), changelog.PathDelete, key, 1)
		defer span.End()
		err := b.Delete(ctx, key) // the backend (the reconciler) hands the change's trace to its translation
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		switch {
		case errors.Is(err, snapshot.ErrNotFound):
			if o, ok := findConfig(b.Config(), key); ok {
				// Not applied through the API, yet in the configuration: it is read from
				// the config directory (or Kubernetes), and only removing it there lasts.
				http.Error(w, notFromAPI(o), http.StatusConflict)
				return
			}
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
		config := b.Config()
		for _, o := range config {
			if (kind == "" || o.Kind == kind) && (name == "" || o.Name == name) {
				src := o.Source
				if src == "" {
					src = SourceAPI
				}
				items = append(items, Item{Key: o.Key(), Kind: o.Kind, Name: o.Name, Object: o.Raw, Source: src, Status: status[o.String()]})
			}
		}
		// What the agents discovered (Services, EndpointSlices, Gateways… of their
		// clusters) is part of what the server translates: list it with its cluster.
		for _, c := range slices.Sorted(maps.Keys(translate.Clusters(config))) {
			for _, res := range b.Input(c).Sorted() {
				k, ns, n, err := resource.ParseKey(res.Key)
				if err != nil || (kind != "" && k != kind) || (name != "" && n != name) {
					continue
				}
				items = append(items, Item{Key: res.Key, Kind: k, Name: n, Object: res.Body, Cluster: c, Source: SourceDiscovered,
					Status: status[resource.Object{Kind: k, Namespace: ns, Name: n}.String()]})
			}
		}
		sort.SliceStable(items, func(i, j int) bool {
			if items[i].Key != items[j].Key {
				return items[i].Key < items[j].Key
			}
			return items[i].Cluster < items[j].Cluster
		})
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
		// Sent exactly as the snapshot encodes itself: its bodies are hashed byte for
		// byte, and the client checks every hash (re-indenting them would break that).
		body, err := snap.MarshalJSON()
		if err != nil {
			http.Error(w, fmt.Sprintf("encode %s snapshot of cluster %q: %v", r.PathValue("kind"), r.PathValue("cluster"), err), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
}

func findConfig(config []resource.Object, key string) (resource.Object, bool) {
	for _, o := range config {
		if o.Key() == key {
			return o, true
		}
	}
	return resource.Object{}, false
}

// notFromAPI explains why a configuration resource cannot be deleted through the API.
func notFromAPI(o resource.Object) string {
	switch {
	case o.Source == "":
		return fmt.Sprintf("%s was not applied through the API, so delete cannot remove it: it is read from the server's "+
			"--config-dir (or, with --kubernetes, from a custom resource); remove it there", o)
	case !resource.IsManifest(o.Source):
		return fmt.Sprintf("%s was not applied through the API, so delete cannot remove it: it comes from %s; delete it there", o, o.Source)
	}
	return fmt.Sprintf("%s was not applied through the API, so delete cannot remove it: it comes from the config directory, "+
		"file %s; remove it from that file (or delete the file) and the server drops it", o, o.Source)
}

// Protected returns a registrar of routes behind the same admin token check as Register's,
// for APIs that live elsewhere (such as the CA rotations).
func Protected(adm *admin.Server, token func() (string, error)) interface{ Handle(string, http.Handler) } {
	return authenticated{adm, token}
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
			reason, counted := "no admin token", admin.RefusedNoToken
			if ok {
				reason, counted = "wrong admin token", admin.RefusedWrongToken
			}
			a.adm.Refused(r, counted)
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
