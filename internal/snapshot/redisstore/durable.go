package redisstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated says that a write that must not be lost is on the Redis primary but no
// replica acknowledged it in time (WAIT fell short): a failover of Redis now could lose it.
var ErrNotReplicated = errors.New("no redis replica acknowledged the write")

// DefaultWaitTimeout bounds how long a write that must not be lost waits for a replica.
const DefaultWaitTimeout = time.Second

// Replication makes the writes that must not be lost (docs/adr/0015) wait until a Redis
// replica has them: the lock's acquisition, raise and switch with their epochs (and the
// holder's every round, so that it writes only under a lock a replica has), applied
// configuration, and revocations. Each such write runs on one connection to the primary that
// holds the store's hash slot, followed by WAIT on that connection.
//
// How many replicas to wait for: one, once this process has seen the primary (by its run
// id) with a connected replica; none for a primary never seen with one (a lone node, or a
// replica just promoted whose peers are gone), so that a single Redis keeps working. A
// replica that stops, on a primary that had one, thus makes these writes fail loudly rather
// than succeed on the primary alone.
//
// A shortfall is counted, logged when it starts, and kept (Status) until a later write that
// must not be lost reaches a replica. It is safe for concurrent use; the stores of one
// server share one.
type Replication struct {
	timeout time.Duration
	log     *slog.Logger

	mu         sync.Mutex      // guards the fields below
	seen       map[string]bool // run ids of primaries seen with a connected replica
	shortfalls uint64
	last       *Shortfall // nil once a later write reached a replica
}

// Shortfall is a write that must not be lost which no replica acknowledged in time.
type Shortfall struct {
	// Write names the write (e.g. "put config resource Service/default/web").
	Write string `json:"write"`
	// Wanted and Acked are WAIT's numreplicas and its answer.
	Wanted int `json:"wanted"`
	Acked  int `json:"acked"`
	// At is when WAIT gave up.
	At time.Time `json:"at"`
}

func (s Shortfall) String() string {
	return fmt.Sprintf("%s at %s: %d of %d redis replicas acknowledged it; it is on the primary and is lost if the primary fails before a replica gets it",
		s.Write, s.At.Format(time.RFC3339), s.Acked, s.Wanted)
}

// NewReplication returns the replication policy of one server's stores: WAIT for at most
// timeout (DefaultWaitTimeout when zero); log may be nil. It does no I/O.
func NewReplication(timeout time.Duration, log *slog.Logger) *Replication {
	if timeout <= 0 {
		timeout = DefaultWaitTimeout
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Replication{timeout: timeout, log: log, seen: map[string]bool{}}
}

// Shortfalls counts the writes that must not be lost which no replica acknowledged in time.
func (r *Replication) Shortfalls() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.shortfalls
}

// Status returns the last shortfall while no later write that must not be lost has reached
// a replica, nil otherwise (and for a nil Replication: a server without Redis).
func (r *Replication) Status() *Shortfall {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return nil
	}
	s := *r.last
	return &s
}

// wanted returns how many replicas to wait for on the primary with runID that reports
// connected replicas.
func (r *Replication) wanted(runID string, connected int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if connected > 0 {
		r.seen[runID] = true
	}
	if r.seen[runID] {
		return 1
	}
	return 0
}

func (r *Replication) record(what string, wanted, acked int) error {
	s := Shortfall{Write: what, Wanted: wanted, Acked: acked, At: time.Now().UTC()}
	r.mu.Lock()
	r.shortfalls++
	first := r.last == nil
	r.last = &s
	r.mu.Unlock()
	if first {
		r.log.Warn("redis write not acknowledged by a replica", "write", what, "wanted", wanted, "acked", acked, "timeout", r.timeout)
	}
	return fmt.Errorf("%s: %w within %v (%d of %d): it is on the redis primary, and is lost if the primary fails before a replica gets it", what, ErrNotReplicated, r.timeout, acked, wanted)
}

func (r *Replication) reached() {
	r.mu.Lock()
	was := r.last
	r.last = nil
	r.mu.Unlock()
	if was != nil {
		r.log.Info("redis writes acknowledged by a replica again", "after", was.Write)
	}
}

// primaryConn returns one connection to the primary that holds key's slot: in a Cluster the
// node MasterForKey names, otherwise the client's primary (Sentinel's or the single node).
// It is nil for a client that offers no single connection (then nothing is waited for).
func primaryConn(ctx context.Context, c redis.UniversalClient, key string) (*redis.Conn, error) {
	switch cc := c.(type) {
	case *redis.ClusterClient:
		node, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return nil, err
		}
		return node.Conn(), nil
	case interface{ Conn() *redis.Conn }:
		return cc.Conn(), nil
	}
	return nil, nil
}

// durable runs write (which reports whether it changed anything) on one connection to the
// primary of the store's slot and, when it wrote, waits on that connection until the
// replicas wanted have it. what names the write in errors; a shortfall wraps
// ErrNotReplicated (the write stays on the primary).
func (k keys) durable(ctx context.Context, what string, write func(redis.Cmdable) (bool, error)) error {
	conn, err := primaryConn(ctx, k.c, k.lockKey())
	if err != nil {
		return unavailable(err, "%s: find the redis primary", what)
	}
	if conn == nil {
		_, err := write(k.c)
		return err
	}
	defer conn.Close()
	info, err := conn.Info(ctx, "server", "replication").Result()
	if err != nil {
		return unavailable(err, "%s: read redis replication", what)
	}
	runID, connected := parseReplication(info)
	wanted := k.repl.wanted(runID, connected)
	wrote, err := write(conn)
	if err != nil || !wrote || wanted == 0 {
		return err
	}
	timeout := k.repl.timeout
	if dl, ok := ctx.Deadline(); ok {
		// Answer within the caller's deadline, with time left to read WAIT's reply.
		timeout = min(timeout, max(time.Until(dl)*3/4, 10*time.Millisecond))
	}
	acked, err := conn.Wait(ctx, wanted, timeout).Result()
	if err != nil {
		return unavailable(err, "%s: wait for a redis replica", what)
	}
	if int(acked) < wanted {
		return k.repl.record(what, wanted, int(acked))
	}
	k.repl.reached()
	return nil
}

// parseReplication reads the run id and the number of connected replicas from the INFO
// sections server and replication.
func parseReplication(info string) (runID string, connected int) {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "run_id":
			runID = v
		case "connected_slaves":
			connected, _ = strconv.Atoi(v)
		}
	}
	return runID, connected
}
