package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// A flood of registrations with a bad token from one source is rate limited: connected
// agents keep receiving changes, a new agent from another source registers, and the flood
// shows in the log, the metrics and check. The propagation latency of a change is measured
// without and with the flood (logged, not asserted: the machine is shared).
func TestRegistrationFloodDoesNotStarveAgents(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote", "late"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	late := h.startAgent("late", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "blue reaches remote", func() error { return outputHas(t, remote, blueInLocal) })

	// propagate moves blue's endpoint n times, one at a time, and times each move's arrival
	// at remote.
	seq := 1
	seFile := filepath.Join(remote.output, "serviceentry_default_vd-service-blue.yaml")
	propagate := func(n int) []time.Duration {
		var out []time.Duration
		for range n {
			seq++
			ip := fmt.Sprintf("10.1.0.%d", seq)
			start := time.Now()
			writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", ip, 10000))
			for { // a tight poll: the figure is the point
				if b, err := os.ReadFile(seFile); err == nil && strings.Contains(string(b), ip) {
					break
				}
				if time.Since(start) > 30*time.Second {
					t.Fatalf("%s did not reach remote's ServiceEntry within 30s", ip)
				}
				time.Sleep(5 * time.Millisecond)
			}
			out = append(out, time.Since(start))
		}
		return out
	}
	quiet := propagate(10)

	// The flood: 8 clients from 127.0.0.2, each calling Register with a wrong token as fast
	// as it can.
	caPEM, err := os.ReadFile(s.caFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "local")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	floodStart := time.Now()
	var attempts, limited, other atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		conn, err := grpc.NewClient("passthrough:///"+s.relay,
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := relayv1.NewRelayServiceClient(conn)
		wg.Go(func() {
			for ctx.Err() == nil {
				_, err := c.Register(ctx, &relayv1.RegisterRequest{Token: "stolen-guess", Cluster: "local", CsrPem: csr})
				attempts.Add(1)
				switch status.Code(err) {
				case codes.ResourceExhausted:
					limited.Add(1)
				case codes.Unauthenticated, codes.Canceled:
				default:
					other.Add(1)
				}
			}
		})
	}
	flooded := propagate(10)
	// An agent (from 127.0.0.1) that lost its certificate registers again during the flood.
	if err := late.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"agent.crt", "agent.key"} {
		if err := os.Remove(filepath.Join(late.state, f)); err != nil {
			t.Fatal(err)
		}
	}
	registered := metric(t, s.admin, "meshrelay_relay_registrations_total")
	h.restartAgent(late)
	poll.Eventually(t, 20*time.Second, "late agent registered and connected during the flood", func() error {
		if st := late.status(t); !st.Connected {
			return fmt.Errorf("late agent not connected: %s", st.LastError)
		}
		if got := metric(t, s.admin, "meshrelay_relay_registrations_total"); got != registered+1 {
			return fmt.Errorf("registrations %v, want %v", got, registered+1)
		}
		return nil
	})
	stop()
	wg.Wait()

	n, lim := attempts.Load(), limited.Load()
	t.Logf("flood: %d registration attempts with a bad token in %s, %d rate limited, %d other errors", n, time.Since(floodStart).Round(time.Millisecond), lim, other.Load())
	t.Logf("propagation of one change (10 each): quiet p50 %s max %s; during the flood p50 %s max %s",
		pct(quiet, 50), pct(quiet, 100), pct(flooded, 50), pct(flooded, 100))
	if other.Load() != 0 {
		t.Errorf("%d flood attempts failed for another reason than the token or the rate limit", other.Load())
	}
	if n < 100 || float64(lim) < 0.9*float64(n) {
		t.Fatalf("flood of %d attempts: %d rate limited; want at least 90%% refused before the token check", n, lim)
	}
	if got := metric(t, s.admin, "meshrelay_relay_rejected_total", `reason="rate-limited"`); got < float64(lim) {
		t.Fatalf("meshrelay_relay_rejected_total{reason=rate-limited} = %v, want >= %d", got, lim)
	}
	if err := logContains(t, s.p, "relay rate limit: refusing attempts"); err != nil {
		t.Fatal(err)
	}
	out, _, code := cliExit(t, "check", "--server", s.admin)
	if code == 0 || !strings.Contains(out, "relay rate limit") || !strings.Contains(out, "127.0.0.2") {
		t.Fatalf("check (exit %d) does not report the flood:\n%s", code, out)
	}
}

// pct returns the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)].Round(time.Millisecond)
}

// A cluster whose input is larger than gRPC's default message limit (4 MiB) crosses the
// relay whole (the output direction: internal/relay's TestOutputOverGRPCDefaultDelivered).
func TestLargeInputCrossesTheRelay(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	// Six services with a 1 MiB annotation each: a big input that translates cheaply.
	var b strings.Builder
	for i := range 6 {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: big-%d\n  namespace: default\n  annotations:\n    example.com/blob: %s\nspec:\n  ports:\n  - name: http\n    port: 80\n---\n", i, strings.Repeat("x", 1<<20))
	}
	writeFile(t, filepath.Join(local.discovery, "big.yaml"), b.String())
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 60*time.Second, "blue (discovered with the big services) reaches remote", func() error {
		if err := outputHas(t, remote, blueInLocal); err != nil {
			return fmt.Errorf("%w (local: %s)", err, local.status(t).LastError)
		}
		return nil
	})
	input, errOut, code := cliExit(t, "debug", "snapshot", "--server", s.admin, "--cluster", "local", "--input", "-o", "table")
	if code != 0 {
		t.Fatalf("debug snapshot: %s", errOut)
	}
	for i := range 6 {
		if !strings.Contains(input, fmt.Sprintf("big-%d", i)) {
			t.Fatalf("the server's input of local lacks big-%d:\n%s", i, input)
		}
	}
	if got := metric(t, local.admin, "meshrelay_agent_input_too_large_total"); got != 0 {
		t.Fatalf("meshrelay_agent_input_too_large_total = %v", got)
	}
}
