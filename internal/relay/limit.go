package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Rate limits that keep a flood of bad attempts or registrations from starving the agents
// that are connected: a source address (an IP) may fail authentication failureBurst times
// at once and failureRate times a second after that; a cluster may be issued
// registrationBurst certificates at once and one every registrationEvery after that.
const (
	failureRate       = 1
	failureBurst      = 20
	registrationBurst = 10
	registrationEvery = 6 * time.Second
	// RateLimitMemory is how long a refused source stays in /status (and fails check).
	RateLimitMemory = 5 * time.Minute
	// limiterCap bounds the remembered sources; full (idle) limiters are dropped beyond it.
	limiterCap = 4096
)

// RateLimited is a source (or a cluster's registrations) refused by the rate limit.
type RateLimited struct {
	// Source is the peer's IP address, or "cluster <name>" for a cluster's registrations.
	Source  string    `json:"source"`
	Refused uint64    `json:"refused"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
}

// limits holds the per-source failure budgets and the per-cluster registration budgets.
type limits struct {
	log      *slog.Logger
	rejected func(reason string)

	mu      sync.Mutex // guards everything below
	buckets map[string]*rate.Limiter
	refused map[string]*RateLimited
	logged  map[string]time.Time // last refusal log line per key
}

func newLimits(log *slog.Logger, rejected func(string)) *limits {
	return &limits{log: log, rejected: rejected, buckets: map[string]*rate.Limiter{},
		refused: map[string]*RateLimited{}, logged: map[string]time.Time{}}
}

// bucket returns key's limiter, creating it (and dropping full ones beyond limiterCap).
func (l *limits) bucket(key string, r rate.Limit, burst int, now time.Time) *rate.Limiter {
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= limiterCap {
			for k, o := range l.buckets {
				if o.TokensAt(now) >= float64(o.Burst()) {
					delete(l.buckets, k)
				}
			}
		}
		b = rate.NewLimiter(r, burst)
		l.buckets[key] = b
	}
	return b
}

// refuse records and reports a refusal; the log line is written once per key every 10s.
func (l *limits) refuse(key, what string, retry time.Duration, now time.Time) error {
	r := l.refused[key]
	if r == nil || now.Sub(r.Last) > RateLimitMemory {
		r = &RateLimited{Source: key, First: now}
		l.refused[key] = r
	}
	r.Refused++
	r.Last = now
	if now.Sub(l.logged[key]) >= 10*time.Second {
		l.logged[key] = now
		l.log.Warn("relay rate limit: refusing attempts", "source", key, "what", what, "refusedSoFar", r.Refused, "retryAfter", retry.Round(time.Millisecond))
	}
	for k, o := range l.refused { // forget old refusals
		if now.Sub(o.Last) > RateLimitMemory {
			delete(l.refused, k)
			delete(l.logged, k)
		}
	}
	l.rejected("rate-limited")
	return status.Errorf(codes.ResourceExhausted, "%s: rate limited, retry in %s", what, retry.Round(time.Second)+time.Second)
}

// admitSource refuses a source that used up its budget of failed attempts.
func (l *limits) admitSource(src string) error {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(src, failureRate, failureBurst, now)
	if b.TokensAt(now) >= 1 {
		return nil
	}
	retry := time.Duration((1 - b.TokensAt(now)) / failureRate * float64(time.Second))
	return l.refuse(src, "too many failed attempts from "+src, retry, now)
}

// failed spends one of src's failed attempts.
func (l *limits) failed(src string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bucket(src, failureRate, failureBurst, now).AllowN(now, 1)
}

// admitRegistration spends one of cluster's registrations, or refuses it.
func (l *limits) admitRegistration(cluster string) error {
	now := time.Now()
	key := "cluster " + cluster
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(key, rate.Every(registrationEvery), registrationBurst, now)
	if r := b.ReserveN(now, 1); r.OK() {
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return l.refuse(key, fmt.Sprintf("too many registrations of cluster %q", cluster), d, now)
		}
	}
	return nil
}

// list returns the refusals of the last RateLimitMemory, by source.
func (l *limits) list() []RateLimited {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []RateLimited
	for _, r := range l.refused {
		if now.Sub(r.Last) <= RateLimitMemory {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

// authFailure reports whether an RPC's error is a refused identity (a bad token, an unknown
// cluster, a certificate of another cluster) or a malformed registration; a request to
// register again under a rotated relay CA is none.
func authFailure(err error) bool {
	if caRotation(err) {
		return false
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return true
	}
	return false
}

func sourceIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// RateLimited returns the sources and clusters refused by the rate limit recently.
func (s *Server) RateLimited() []RateLimited { return s.limits.list() }

// UnaryInterceptor refuses calls from a source that failed too often and counts failures.
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		src := sourceIP(ctx)
		if err := s.limits.admitSource(src); err != nil {
			return nil, err
		}
		resp, err := handler(ctx, req)
		if authFailure(err) {
			s.limits.failed(src)
		}
		return resp, err
	}
}

// StreamInterceptor is UnaryInterceptor for the Push and Pull streams.
func (s *Server) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		src := sourceIP(ss.Context())
		if err := s.limits.admitSource(src); err != nil {
			return err
		}
		err := handler(srv, ss)
		if authFailure(err) {
			s.limits.failed(src)
		}
		return err
	}
}

// GRPCOptions are the relay's gRPC server options: the message size limit and the rate
// limits.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxMessageBytes), grpc.MaxSendMsgSize(s.cfg.MaxMessageBytes),
		grpc.ChainUnaryInterceptor(s.UnaryInterceptor()), grpc.ChainStreamInterceptor(s.StreamInterceptor()),
	}
}

// messageSlack leaves room for the message around a delta under the size limit.
const messageSlack = 4 << 10
