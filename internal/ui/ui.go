// Package ui serves the management server's web UI at /ui on the admin address: one
// server-rendered page (html/template) of the clusters, HA roles, outputs and translation
// problems, failover schemes, a topology graph (SVG), the timeline of configuration changes,
// certificate expiry and the control plane's own sync health, kept live by server-sent
// events that carry the re-rendered page body. A small embedded script and stylesheet are
// the only assets; nothing is built with npm.
//
// Authentication is the admin API's token: a browser cannot send the bearer header, so
// /ui/login takes the token once (form POST, or ?token= for a link) and sets an HttpOnly,
// SameSite=Strict cookie (Secure when the admin API is HTTPS) holding an HMAC of the token,
// never the token itself. Rotating the token ends every UI session.
package ui

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

//go:embed assets
var assets embed.FS

// CookieName is the UI session cookie.
const CookieName = "meshrelay_ui"

// Handler is what the UI registers routes on (the admin server).
type Handler interface {
	Handle(pattern string, h http.Handler)
}

// Config wires the UI to what the server knows.
type Config struct {
	// Token returns the admin token (re-read on every request, so it can be rotated).
	Token func() (string, error)
	// TLS says the admin API is served over HTTPS (the cookie is then Secure).
	TLS bool
	// View returns what the page shows now.
	View func() View
	// Interval is how often a live page is re-rendered (default 1s).
	Interval time.Duration
	// Metrics registers the UI's metrics (nil: a registry of its own, for tests).
	Metrics prometheus.Registerer
}

// Register adds /ui, /ui/login, /ui/logout, /ui/events and /ui/assets/ to h.
func Register(h Handler, cfg Config, log *slog.Logger) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	s := &server{cfg: cfg, log: log, tmpl: parseTemplates(),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshrelay_ui_login_refused_total",
			Help: "UI logins refused, by reason: no_token (an empty token), wrong_token (not the admin token)."}, []string{"reason"})}
	for _, r := range []string{refusedNoToken, refusedWrongToken} {
		s.refused.WithLabelValues(r)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	cfg.Metrics.MustRegister(s.refused)
	h.Handle("GET /ui/assets/", http.StripPrefix("/ui/", http.FileServerFS(assets)))
	h.Handle("GET /ui/login", http.HandlerFunc(s.loginPage))
	h.Handle("POST /ui/login", http.HandlerFunc(s.login))
	h.Handle("POST /ui/logout", http.HandlerFunc(s.logout))
	h.Handle("GET /ui", s.authed(s.page))
	h.Handle("GET /ui/{$}", s.authed(s.page))
	h.Handle("GET /ui/events", s.authed(s.events))
}

func parseTemplates() *template.Template {
	return template.Must(template.New("ui").Funcs(funcs).ParseFS(assets, "assets/*.html"))
}

type server struct {
	cfg     Config
	log     *slog.Logger
	tmpl    *template.Template
	refused *prometheus.CounterVec
}

// Reasons of meshrelay_ui_login_refused_total.
const (
	refusedNoToken    = "no_token"
	refusedWrongToken = "wrong_token"
)

// session is the cookie value for a token: an HMAC keyed by the token, so the cookie never
// holds the token and stops working when the token changes.
func session(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("meshrelay ui session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func (s *server) authed(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want, err := s.cfg.Token()
		if err != nil {
			http.Error(w, "admin token unavailable on the server: "+err.Error(), http.StatusInternalServerError)
			return
		}
		c, err := r.Cookie(CookieName)
		if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(session(want))) != 1 {
			if r.URL.Path == "/ui/events" {
				http.Error(w, "not logged in to the UI (or the admin token changed): open /ui/login", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		next(w, r)
	})
}

func (s *server) loginPage(w http.ResponseWriter, r *http.Request) {
	if tok := r.URL.Query().Get("token"); tok != "" {
		s.authenticate(w, r, tok) // a link printed by `meshrelay demo`
		return
	}
	s.render(w, http.StatusOK, "login.html", loginData{})
}

func (s *server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		s.render(w, http.StatusBadRequest, "login.html", loginData{Error: "could not read the form: " + err.Error()})
		return
	}
	s.authenticate(w, r, strings.TrimSpace(r.PostForm.Get("token")))
}

type loginData struct{ Error string }

func (s *server) authenticate(w http.ResponseWriter, r *http.Request, got string) {
	want, err := s.cfg.Token()
	if err != nil {
		http.Error(w, "admin token unavailable on the server: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		reason := refusedWrongToken
		if got == "" {
			reason = refusedNoToken
		}
		s.refused.WithLabelValues(reason).Inc()
		s.log.Warn("ui login refused", "remote", r.RemoteAddr, "reason", "wrong admin token", "code", reason)
		s.render(w, http.StatusUnauthorized, "login.html", loginData{Error: "wrong admin token: give the server's admin token (its --admin-token-file, by default <data-dir>/admin-token)"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: session(want), Path: "/ui", HttpOnly: true, Secure: s.cfg.TLS, SameSite: http.SameSiteStrictMode})
	s.log.Info("ui login", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/ui", http.StatusSeeOther)
}

func (s *server) logout(w http.ResponseWriter, _ *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/ui", MaxAge: -1, HttpOnly: true, Secure: s.cfg.TLS, SameSite: http.SameSiteStrictMode})
	w.Header().Set("Location", "/ui/login")
	w.WriteHeader(http.StatusSeeOther)
}

func (s *server) page(w http.ResponseWriter, _ *http.Request) {
	v := s.cfg.View()
	v.Interval = s.cfg.Interval
	s.render(w, http.StatusOK, "page.html", v)
}

// events streams the page body as server-sent events whenever it changes; the loop runs in
// the request's goroutine and ends with the request (the client leaves or the server stops).
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	var last []byte
	for {
		var b bytes.Buffer
		v := s.cfg.View()
		v.Interval = s.cfg.Interval
		if err := s.tmpl.ExecuteTemplate(&b, "body", v); err != nil {
			s.log.Error("ui render failed", "template", "body", "error", err)
			return
		}
		if !bytes.Equal(b.Bytes(), last) {
			last = b.Bytes()
			if _, err := fmt.Fprintf(w, "event: body\ndata: %s\n\n", strings.ReplaceAll(b.String(), "\n", "\ndata: ")); err != nil {
				return // the client left
			}
			fl.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

func (s *server) render(w http.ResponseWriter, code int, name string, data any) {
	var b bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		s.log.Error("ui render failed", "template", name, "error", err)
		http.Error(w, "render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}
