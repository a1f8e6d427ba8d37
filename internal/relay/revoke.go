package relay

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/internal/atomicfile"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/relaywire"
)

// Revocations keeps, per cluster, the time before which its certificates are revoked
// (`meshrelay cluster revoke`). The file store serves one server; replicas sharing Redis
// share the store's (redisstore.Revocations implements it).
type Revocations interface {
	Revoke(ctx context.Context, cluster string, at time.Time) error
	Revoked(ctx context.Context) (map[string]time.Time, error)
}

// RevocationsFileName is the revocation list in a server's data directory.
const RevocationsFileName = "revoked-clusters.json"

// FileRevocations keeps the revocations in <dir>/revoked-clusters.json.
type FileRevocations struct {
	path string
	mu   sync.Mutex
}

// NewFileRevocations returns the revocation list of the data directory dir.
func NewFileRevocations(dir string) *FileRevocations {
	return &FileRevocations{path: filepath.Join(dir, RevocationsFileName)}
}

// Revoked returns every revocation.
func (f *FileRevocations) Revoked(context.Context) (map[string]time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.read()
}

func (f *FileRevocations) read() (map[string]time.Time, error) {
	m := map[string]time.Time{}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("revocations %s: %w", f.path, err)
	}
	return m, nil
}

// Revoke records that certificates of cluster issued before at are revoked.
func (f *FileRevocations) Revoke(_ context.Context, cluster string, at time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.read()
	if err != nil {
		return err
	}
	m[cluster] = at.UTC()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(f.path, b, 0o600); err != nil {
		return fmt.Errorf("write revocations: %w", err)
	}
	return nil
}

// Reasons the server closes or refuses a cluster's streams (the ErrorInfo reason agents
// see, and the reason label of meshrelay_relay_rejected_total and
// meshrelay_relay_streams_closed_total).
const (
	ReasonRevoked      = "revoked"
	ReasonDeregistered = "deregistered"
	ReasonRenew        = "ca-rotation"
	ReasonUntrusted    = "ca-dropped"
)

// cutError is why the server closed or refused a stream; agents receive it as a status.
type cutError struct {
	code   codes.Code
	reason string
	msg    string
}

func (e *cutError) Error() string { return e.msg }

// ReasonCARotation is the ErrorInfo reason of a stream closed or refused by the relay CA's
// rotation: the agent is asked to register again, which is not a failed attempt (the rate
// limit of failures per source does not count it).
const ReasonCARotation = "CA_ROTATION"

func (e *cutError) status() error {
	st := status.New(e.code, e.msg)
	if e.reason == ReasonRenew || e.reason == ReasonUntrusted {
		if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonCARotation, Domain: relaywire.ErrorDomain}); err == nil {
			st = d
		}
	}
	return st.Err()
}

// caRotation reports whether err asks the agent to register again for a relay CA rotation.
func caRotation(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == relaywire.ErrorDomain && info.GetReason() == ReasonCARotation {
			return true
		}
	}
	return false
}

// revokedAt returns the revocation of cluster when leaf was issued before it.
func (s *Server) revokedAt(cluster string, leaf *x509.Certificate) (time.Time, bool) {
	if leaf == nil {
		return time.Time{}, false
	}
	s.revMu.Lock()
	at, ok := s.revoked[cluster]
	s.revMu.Unlock()
	return at, ok && pki.IssuedAt(leaf).Before(at)
}

// cause says why a stream of cluster presenting leaf may not stay open, or nil; the relay
// CA's checks are made when ca is set (at stream open, and on open streams once after each
// change of the trusted CAs).
func (s *Server) cause(cluster string, leaf *x509.Certificate, ca bool) *cutError {
	if !s.registry.IsRegistered(cluster) {
		return &cutError{codes.PermissionDenied, ReasonDeregistered, fmt.Sprintf("cluster %q is not registered", cluster)}
	}
	if at, ok := s.revokedAt(cluster, leaf); ok {
		return &cutError{codes.Unauthenticated, ReasonRevoked, fmt.Sprintf("the certificate of cluster %q issued at %s was revoked at %s: register again with the relay identity token",
			cluster, pki.IssuedAt(leaf).Format(time.RFC3339), at.Format(time.RFC3339))}
	}
	if leaf == nil || !ca {
		return nil
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.auth.Trusted(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return &cutError{codes.Unauthenticated, ReasonUntrusted, fmt.Sprintf("the certificate of cluster %q is no longer trusted (the relay CA was rotated): register again with the relay identity token", cluster)}
	}
	if s.auth.outdated(leaf) {
		return &cutError{codes.Unauthenticated, ReasonRenew, fmt.Sprintf("relay CA rotation: the certificate of cluster %q is from the old CA; register again to get one from the new CA and the new trust bundle", cluster)}
	}
	return nil
}

// Revoke refuses, at once and from now on, the certificates of cluster issued until now;
// the agent may register again with the token. It returns the revocation time.
func (s *Server) Revoke(ctx context.Context, cluster string) (time.Time, error) {
	if s.cfg.Mode != relaywire.ModeMTLS {
		return time.Time{}, errors.New("the relay runs in tls mode: agents hold no certificates; rotate the relay identity token instead")
	}
	if s.cfg.Revocations == nil {
		return time.Time{}, errors.New("revocation is not configured on this server")
	}
	// Certificates carry their issue time to the second: one issued in the second of the
	// revocation is revoked too.
	at := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	if err := s.cfg.Revocations.Revoke(ctx, cluster, at); err != nil {
		return time.Time{}, fmt.Errorf("record the revocation of cluster %s: %w", cluster, err)
	}
	s.revMu.Lock()
	s.revoked[cluster] = at
	s.revMu.Unlock()
	s.log.Warn("cluster certificates revoked", "cluster", cluster, "before", at)
	s.sweep(ctx)
	return at, nil
}

// Run keeps the open streams honest until ctx ends: every second (and at once after a
// revocation or a rotation step) it reloads the revocations, closes the streams of
// revoked, deregistered or rotated-out certificates, and completes a rotation whose agents
// all moved to the new CA.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.sweep(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
		}
	}
}

// Kick asks Run to sweep now.
func (s *Server) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) sweep(ctx context.Context) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	if s.cfg.Revocations != nil {
		m, err := s.cfg.Revocations.Revoked(ctx)
		if err != nil {
			s.log.Warn("revocations not reloaded; using the last ones read", "error", err)
		} else {
			s.revMu.Lock()
			for c, at := range m {
				if at.After(s.revoked[c]) {
					s.revoked[c] = at
				}
			}
			s.revMu.Unlock()
		}
	}
	gen := s.auth.generation()
	caChecks := gen != s.caGen
	cuts := s.sessions.cut(func(cluster string, leaf *x509.Certificate) *cutError { return s.cause(cluster, leaf, caChecks) })
	s.caGen = gen
	for cluster, c := range cuts {
		s.m.closed.WithLabelValues(c.reason).Inc()
		if c.reason == ReasonRenew {
			s.rotMu.Lock()
			s.awaiting[cluster] = true
			s.rotMu.Unlock()
			s.log.Info("open streams closed: agent asked to register under the new relay CA", "cluster", cluster, "reason", c.reason)
			continue
		}
		s.log.Warn("open streams closed", "cluster", cluster, "reason", c.reason, "error", c.msg)
	}
	if s.cfg.Mode != relaywire.ModeMTLS {
		return
	}
	st := s.auth.status()
	pending := s.pending()
	s.m.caPending.Set(float64(len(pending)))
	if st.Phase == PhaseTrustBoth && len(pending) == 0 {
		if err := s.complete(); err != nil {
			s.log.Error("relay ca rotation not completed; both CAs stay trusted", "error", err)
			return
		}
		s.log.Info("relay ca rotation completed: the old CA is dropped", "phase", PhaseIdle, "caNotAfter", s.auth.Current().Cert.NotAfter)
	} else if st.Phase == PhaseTrustBoth {
		s.log.Debug("relay ca rotation waiting for agents", "pending", pending)
	}
	s.m.caPhase.Set(map[bool]float64{true: 1}[s.auth.status().Phase == PhaseTrustBoth])
}

// pending returns, sorted, the registered clusters whose agent still holds a certificate of
// the old CA: connected with one, or asked to register again and not back yet.
func (s *Server) pending() []string {
	out := s.sessions.pending(s.auth.outdated)
	s.rotMu.Lock()
	for c := range s.awaiting {
		if !s.registry.IsRegistered(c) {
			delete(s.awaiting, c)
		} else if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	s.rotMu.Unlock()
	slices.Sort(out)
	return out
}

func (s *Server) complete() error {
	if err := s.auth.complete(); err != nil {
		return err
	}
	s.rotMu.Lock()
	clear(s.awaiting)
	s.lastRotation = time.Now().UTC()
	s.rotMu.Unlock()
	return nil
}

// StartRotation begins (or resumes) a relay CA rotation to next (nil: generate one).
func (s *Server) StartRotation(next *pki.CA) (RotationStatus, error) {
	if s.cfg.Mode != relaywire.ModeMTLS {
		return RotationStatus{}, errors.New("the relay runs in tls mode: agents hold no certificates to rotate")
	}
	started, err := s.auth.Start(next)
	if err != nil {
		return RotationStatus{}, err
	}
	if started {
		st := s.auth.status()
		s.log.Warn("relay ca rotation started: both CAs trusted; agents are asked to register again", "phase", st.Phase, "nextNotAfter", st.NextNotAfter)
	}
	s.Kick()
	return s.Rotation(), nil
}

// CompleteRotation drops the old CA now, whatever agents still hold its certificates (they
// must register again with the token).
func (s *Server) CompleteRotation() (RotationStatus, error) {
	pending := s.pending()
	if err := s.complete(); err != nil {
		return RotationStatus{}, err
	}
	if len(pending) > 0 {
		s.log.Warn("relay ca rotation completed by the operator while agents held old certificates", "pending", pending)
	}
	s.Kick()
	return s.Rotation(), nil
}

// Rotation reports the relay CA and its rotation.
func (s *Server) Rotation() RotationStatus {
	st := s.auth.status()
	st.Pending = s.pending()
	s.rotMu.Lock()
	st.LastCompleted = s.lastRotation
	s.rotMu.Unlock()
	return st
}
