package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// handshakeTimeout bounds the TLS handshake (and the first byte) of a TCP listener's
// connection.
const handshakeTimeout = 10 * time.Second

var errNoFilterChain = errors.New("no filter chain matches")

// tcpServer serves one TCP listener: TLS terminated with the filter chain chosen by SNI,
// then bytes proxied to an endpoint of the chain's cluster.
type tcpServer struct {
	name     string
	ln       net.Listener
	spec     atomic.Pointer[listenerSpec]
	clusters *clusterManager
	secrets  *secretStore
	metrics  *metrics
	log      *slog.Logger

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // connection handlers
}

// serve accepts until the listener is closed; connections are handled under ctx, which
// closes them when it ends.
func (s *tcpServer) serve(ctx context.Context) {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("tcp accept failed", "listener", s.name, "error", err, "retryIn", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		s.track(c, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.handle(ctx, c)
		}()
	}
}

func (s *tcpServer) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// drain stops accepting and waits for connections to end, closing them when ctx ends.
func (s *tcpServer) drain(ctx context.Context) {
	_ = s.ln.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	<-done
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite half-closes the underlying connection.
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (s *tcpServer) refuse(chain *tcpChain, result string, args ...any) {
	cluster := ""
	if chain != nil {
		cluster = chain.cluster
	}
	s.metrics.tcpConnections.WithLabelValues(s.name, cluster, result).Inc()
	s.log.Debug("tcp connection refused", append([]any{"listener", s.name, "result", result}, args...)...)
}

func (s *tcpServer) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		s.refuse(nil, "refused", "error", err)
		return
	}
	spec := s.spec.Load()
	var down net.Conn = &peekedConn{c, br}
	var chain *tcpChain
	if first[0] == 0x16 { // a TLS handshake record
		conf := &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			chain = spec.selectChain(hello.ServerName, true)
			if chain == nil {
				return nil, fmt.Errorf("%w: server name %q", errNoFilterChain, hello.ServerName)
			}
			if chain.tls.requireSNI && hello.ServerName == "" {
				return nil, errors.New("sni required")
			}
			return s.secrets.serverTLS(chain.tls)
		}}
		tc := tls.Server(down, conf)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			s.refuse(chain, "refused", "remote", c.RemoteAddr().String(), "error", err)
			return
		}
		down = tc
	} else if chain = spec.selectChain("", false); chain == nil {
		s.refuse(nil, "refused", "remote", c.RemoteAddr().String(), "error", "plaintext connection matches no filter chain")
		return
	}
	_ = c.SetDeadline(time.Time{})

	up := s.clusters.get(chain.cluster)
	if up == nil {
		s.refuse(chain, "cluster_not_found")
		return
	}
	upc, err := s.connect(ctx, up, chain.maxConnectAttempts)
	if err != nil {
		result := "upstream_connect_error"
		if errors.Is(err, errNoHealthyUpstream) {
			result = "no_healthy_upstream"
		}
		s.refuse(chain, result, "error", err)
		return
	}
	defer upc.Close()
	stopUp := context.AfterFunc(ctx, func() { _ = upc.Close() })
	defer stopUp()
	s.metrics.tcpConnections.WithLabelValues(s.name, chain.cluster, "proxied").Inc()
	pipe(down, upc)
}

// connect dials an endpoint of the cluster, trying up to attempts endpoints.
func (s *tcpServer) connect(ctx context.Context, up *upstream, attempts int) (net.Conn, error) {
	var err error
	for range attempts {
		var h *host
		if h, err = up.pick(); err != nil {
			return nil, err
		}
		var c net.Conn
		if c, err = h.dial(ctx, up.connectTimeout()); err == nil {
			up.report(h, outcomeSuccess)
			return c, nil
		}
		up.report(h, outcomeLocal)
	}
	return nil, err
}

// closeWriter is a connection that can half-close (TCP and TLS connections).
type closeWriter interface{ CloseWrite() error }

// pipe copies both ways until both directions end; a direction that ends half-closes the
// other side so that protocols relying on it work.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(closeWriter); ok && err == nil {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
			_ = src.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}
