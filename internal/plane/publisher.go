package plane

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Store is where the servers' views are shared (redisstore.Plane implements it).
type Store interface {
	PutPlaneView(ctx context.Context, id string, view []byte, ttl time.Duration) error
	PlaneViews(ctx context.Context) (map[string][]byte, error)
	LeavePlane(ctx context.Context, id string) error
}

// Publisher publishes this server's view every interval (it expires after three) and keeps
// the latest views of its peers. Without a store it reports this server alone.
type Publisher struct {
	id       string
	store    Store // nil: a single server
	local    func() Server
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex // guards peers and lastErr
	peers   []Server
	lastErr string
}

// NewPublisher builds a publisher of server id's view, made by local; it does no I/O.
func NewPublisher(id string, store Store, local func() Server, interval time.Duration, log *slog.Logger) *Publisher {
	if interval <= 0 {
		interval = time.Second
	}
	return &Publisher{id: id, store: store, local: local, interval: interval, log: log}
}

// Start publishes until ctx ends, then withdraws this server's view.
func (p *Publisher) Start(ctx context.Context) error {
	if p.store == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.round(ctx)
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = p.store.LeavePlane(cctx, p.id)
			return nil
		case <-t.C:
		}
	}
}

func (p *Publisher) round(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, p.interval)
	defer cancel()
	err := p.exchange(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil && p.lastErr == "":
		p.log.Warn("plane view not shared; check sees this server only", "error", err)
	case err == nil && p.lastErr != "":
		p.log.Info("plane view shared again")
	}
	p.lastErr = ""
	if err != nil {
		p.lastErr = err.Error()
		p.peers = nil // unknown now: never vouch for a cluster with an old view
	}
}

// exchange publishes this server's view and reads its peers'.
func (p *Publisher) exchange(ctx context.Context) error {
	b, err := json.Marshal(p.local())
	if err != nil {
		return fmt.Errorf("encode plane view: %w", err)
	}
	if err := p.store.PutPlaneView(ctx, p.id, b, 3*p.interval); err != nil {
		return err
	}
	raw, err := p.store.PlaneViews(ctx)
	if err != nil {
		return err
	}
	var peers []Server
	for id, b := range raw {
		if id == p.id {
			continue
		}
		var s Server
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("decode plane view of %s: %w", id, err)
		}
		peers = append(peers, s)
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].ID < peers[j].ID })
	p.mu.Lock()
	p.peers = peers
	p.mu.Unlock()
	return nil
}

// Status returns the plane: this server's view, made now, then its peers' latest.
func (p *Publisher) Status() Status {
	st := Status{Servers: []Server{p.local()}}
	p.mu.Lock()
	defer p.mu.Unlock()
	st.Servers = append(st.Servers, p.peers...)
	st.Error = p.lastErr
	return st
}
