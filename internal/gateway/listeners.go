package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// listenerManager binds, updates and drains listeners. A listener whose address and kind
// are unchanged keeps its socket and connections; only its spec is swapped.
type listenerManager struct {
	log          *slog.Logger
	metrics      *metrics
	clusters     *clusterManager
	secrets      *secretStore
	proxy        *httpProxy
	tasks        *tasks
	drainTimeout time.Duration

	mu         sync.Mutex // guards active and bindErrors
	active     map[string]*activeListener
	bindErrors map[string]string
}

type activeListener struct {
	spec    *listenerSpec
	ln      net.Listener
	http    *http.Server
	handler *httpHandler
	tcp     *tcpServer
	cancel  context.CancelFunc // ends the listener's own context (its connections)
}

func (a *activeListener) update(spec *listenerSpec) {
	a.spec = spec
	if a.handler != nil {
		a.handler.spec.Store(spec)
	}
	if a.tcp != nil {
		a.tcp.spec.Store(spec)
	}
}

// listenerPlan holds the sockets bound for an update before it is committed.
type listenerPlan struct {
	specs map[string]*listenerSpec
	bound map[string]net.Listener
	// deferred listeners take an address an active listener of another name or kind holds:
	// that one is closed first at commit.
	deferred map[string]bool
}

// prepare binds the sockets new listeners need; on failure nothing changes and the update
// is to be rejected.
func (m *listenerManager) prepare(specs map[string]*listenerSpec) (*listenerPlan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	plan := &listenerPlan{specs: specs, bound: map[string]net.Listener{}, deferred: map[string]bool{}}
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		spec := specs[name]
		if a := m.active[name]; a != nil && a.spec.sameSocket(spec) {
			continue
		}
		held := false
		for an, a := range m.active {
			if a.spec.address == spec.address && !a.spec.sameSocket(specs[an]) {
				held = true
			}
		}
		if held {
			plan.deferred[name] = true
			continue
		}
		ln, err := net.Listen("tcp", spec.address)
		if err != nil {
			plan.abort()
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		plan.bound[name] = ln
	}
	return plan, nil
}

func (p *listenerPlan) abort() {
	for _, ln := range p.bound {
		_ = ln.Close()
	}
}

// commit starts, updates and drains listeners to match the plan.
func (m *listenerManager) commit(plan *listenerPlan) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, a := range m.active {
		if spec := plan.specs[name]; spec == nil || !a.spec.sameSocket(spec) {
			delete(m.active, name)
			m.drainLocked(name, a)
		}
	}
	m.bindErrors = map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(plan.specs)) {
		spec := plan.specs[name]
		if a := m.active[name]; a != nil {
			a.update(spec)
			continue
		}
		ln := plan.bound[name]
		if plan.deferred[name] {
			var err error
			if ln, err = net.Listen("tcp", spec.address); err != nil {
				m.bindErrors[name] = err.Error()
				m.log.Error("listener bind failed", "listener", name, "address", spec.address, "error", err)
				continue
			}
		}
		m.active[name] = m.startLocked(spec, ln)
		m.log.Info("listener started", "listener", name, "address", ln.Addr().String(), "kind", string(spec.kind))
	}
}

func (m *listenerManager) startLocked(spec *listenerSpec, ln net.Listener) *activeListener {
	// Connections outlive the gateway's context by up to the drain timeout: the listener's
	// context is cancelled by drainLocked, never directly by the parent.
	lctx, cancel := context.WithCancel(context.WithoutCancel(m.tasks.ctx))
	a := &activeListener{ln: ln, cancel: cancel}
	switch spec.kind {
	case kindHTTP:
		a.handler = &httpHandler{p: m.proxy}
		a.http = &http.Server{
			Handler:           a.handler,
			ReadHeaderTimeout: time.Minute,
			IdleTimeout:       5 * time.Minute,
			ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
			BaseContext:       func(net.Listener) context.Context { return lctx },
		}
		srv := a.http
		m.tasks.goAnon(func(context.Context) {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				m.log.Error("http listener stopped", "listener", spec.name, "error", err)
			}
		})
	case kindTCP:
		a.tcp = &tcpServer{name: spec.name, ln: ln, clusters: m.clusters, secrets: m.secrets, metrics: m.metrics,
			log: m.log, conns: map[net.Conn]struct{}{}}
		s := a.tcp
		m.tasks.goAnon(func(context.Context) { s.serve(lctx) })
	}
	a.update(spec)
	return a
}

// drainLocked closes a listener's socket now and lets its requests and connections finish
// within the drain timeout.
func (m *listenerManager) drainLocked(name string, a *activeListener) {
	m.log.Info("listener draining", "listener", name, "address", a.spec.address, "timeout", m.drainTimeout)
	_ = a.ln.Close()
	m.tasks.goAnon(func(ctx context.Context) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.drainTimeout)
		defer cancel()
		if a.http != nil {
			if err := a.http.Shutdown(dctx); err != nil {
				_ = a.http.Close()
			}
		}
		if a.tcp != nil {
			a.tcp.drain(dctx)
		}
		a.cancel()
	})
}

// shutdown drains every listener; callers then wait for the tasks.
func (m *listenerManager) shutdown() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, a := range m.active {
		delete(m.active, name)
		m.drainLocked(name, a)
	}
}

func (m *listenerManager) status() []ListenerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ListenerStatus
	for _, name := range slices.Sorted(maps.Keys(m.active)) {
		a := m.active[name]
		st := ListenerStatus{Name: name, Address: a.ln.Addr().String(), Kind: string(a.spec.kind), RouteConfig: a.spec.rdsName}
		if a.spec.inlineRoutes != nil {
			st.RouteConfig = "(inline)"
		}
		for _, c := range append(slices.Clone(a.spec.chains), a.spec.defaultChain) {
			if c != nil {
				st.FilterChains = append(st.FilterChains, FilterChainStatus{Name: c.name, ServerNames: c.serverNames, TLS: c.tls != nil, Cluster: c.cluster})
			}
		}
		out = append(out, st)
	}
	for _, name := range slices.Sorted(maps.Keys(m.bindErrors)) {
		out = append(out, ListenerStatus{Name: name, Error: m.bindErrors[name]})
	}
	return out
}
