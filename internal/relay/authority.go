package relay

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/internal/pki"
)

// The relay CA rotates in one phase of overlap (docs/adr/0008-relay-ca-rotation-and-revocation.md):
//
//   - trust-both: a new CA is trusted beside the current one and signs every agent
//     certificate issued from now on; registrations hand agents the bundle of both; agents
//     holding a certificate of the current CA are asked to register again (their streams
//     end with a renewal request, and new ones are refused the same way);
//   - once no connected agent holds a certificate of the current CA, the rotation completes:
//     the new CA becomes the only trusted one and issues the relay serving certificate, the
//     old CA's files are archived, and its certificates are refused.
//
// The new CA's files (<data-dir>/relay-ca-next.crt|key) are the persisted rotation state: a
// server restarted mid-rotation resumes in trust-both.

// Rotation phases as /status reports them.
const (
	PhaseIdle      = "idle"
	PhaseTrustBoth = "trust-both"
)

// Files of the relay CA in a server's data directory.
const (
	caNextCert = "relay-ca-next.crt"
	caNextKey  = "relay-ca-next.key"
	caKeyFile  = "relay-ca.key"
	caArchive  = "relay-ca-archive" // the dropped CAs, named by fingerprint
	serverCert = "relay-server.crt"
	serverKey  = "relay-server.key"
)

// AuthorityConfig configures an Authority.
type AuthorityConfig struct {
	// Dir is the data directory; empty keeps everything in memory (no rotation state).
	Dir string
	// BYO is set when the current CA comes from --relay-ca-cert: its files are the
	// operator's, so completion leaves them alone (the new CA is written into Dir).
	BYO bool
	// Hosts are the names of the serving certificate issued from the CA.
	Hosts []string
	// Serving, when set, is the operator's own serving certificate (--relay-server-cert):
	// never reissued.
	Serving *tls.Certificate
	// OnChange is called after the CA in service changed (the rotation completed).
	OnChange func(current *pki.CA)
}

// Authority is the relay CA as the server uses it while serving: the CA that signs agent
// certificates, the CAs whose certificates are trusted (two during a rotation) and the
// relay serving certificate.
type Authority struct {
	cfg AuthorityConfig
	log *slog.Logger

	mu      sync.Mutex
	current *pki.CA
	next    *pki.CA // non-nil during a rotation
	started time.Time
	serving *tls.Certificate
	trust   *x509.CertPool
	gen     uint64                     // counts the changes of the trusted CAs
	checked map[*x509.Certificate]bool // outdated's answers for this gen, by open stream's leaf
}

// NewAuthority serves current (and, when a rotation is under way in cfg.Dir, its new CA).
func NewAuthority(current *pki.CA, cfg AuthorityConfig, log *slog.Logger) (*Authority, error) {
	if cfg.Dir != "" {
		if dropped, at := archived(cfg.Dir, current.Cert); dropped {
			return nil, fmt.Errorf("the relay CA %q (fingerprint %s) was dropped by a rotation at %s; load the new CA instead "+
				"(a copy is <data-dir>/%s and .key; with --relay-ca-cert point it and --relay-ca-key at the new files)",
				current.Cert.Subject.CommonName, fingerprint(current.Cert)[:16], at.Format(time.RFC3339), pki.CACertName)
		}
	}
	a := &Authority{cfg: cfg, log: log, current: current}
	if cfg.Dir != "" {
		next, err := loadIfPresent(filepath.Join(cfg.Dir, caNextCert), filepath.Join(cfg.Dir, caNextKey), current.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("relay CA rotation under way: %w", err)
		}
		if next != nil && next.Cert.Equal(current.Cert) { // a completion cut short
			if err := removeNext(cfg.Dir); err != nil {
				return nil, err
			}
			next = nil
		}
		if next != nil {
			a.next = next
			a.started = modTime(filepath.Join(cfg.Dir, caNextCert))
			log.Warn("relay ca rotation resumed: both CAs trusted until every agent holds a certificate of the new one", "phase", PhaseTrustBoth, "since", a.started)
		}
	}
	if err := a.issueServing(); err != nil {
		return nil, err
	}
	a.changed()
	return a, nil
}

func loadIfPresent(certFile, keyFile, trustDomain string) (*pki.CA, error) {
	if _, err := os.Stat(certFile); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return pki.LoadCA(certFile, keyFile, trustDomain)
}

func modTime(file string) time.Time {
	if fi, err := os.Stat(file); err == nil {
		return fi.ModTime().UTC()
	}
	return time.Now().UTC()
}

// issueServing issues the relay serving certificate from the current CA (or keeps the
// operator's), with a.mu held or before the Authority is shared.
func (a *Authority) issueServing() error {
	if a.cfg.Serving != nil {
		a.serving = a.cfg.Serving
		return nil
	}
	cert, certPEM, keyPEM, err := a.current.IssueServer(a.cfg.Hosts, 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("issue relay serving certificate: %w", err)
	}
	if a.cfg.Dir != "" {
		if err := pki.WriteKeyPair(filepath.Join(a.cfg.Dir, serverCert), filepath.Join(a.cfg.Dir, serverKey), certPEM, keyPEM); err != nil {
			return err
		}
	}
	a.serving = &cert
	return nil
}

func (a *Authority) pool() *x509.CertPool {
	p := a.current.Pool()
	if a.next != nil {
		p.AppendCertsFromPEM(a.next.CertPEM)
	}
	return p
}

// Serving returns the relay serving certificate in service.
func (a *Authority) Serving() *tls.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.serving
}

// Trusted returns the pool client certificates are verified against.
func (a *Authority) Trusted() *x509.CertPool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.trust
}

// Signer returns the CA that signs agent certificates: the new one during a rotation.
func (a *Authority) Signer() *pki.CA {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next != nil {
		return a.next
	}
	return a.current
}

// Bundle is what agents trust the relay with: the current CA, then the new one.
func (a *Authority) Bundle() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := bytes.Clone(a.current.CertPEM)
	if a.next != nil {
		b = append(b, a.next.CertPEM...)
	}
	return b
}

// TrustDomain is the SPIFFE trust domain of agent identities.
func (a *Authority) TrustDomain() string { return a.current.TrustDomain }

// Current returns the CA in service (the old one during a rotation).
func (a *Authority) Current() *pki.CA {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current
}

// outdated reports whether leaf must be replaced: a rotation is under way and the new CA
// did not sign it. Answers are remembered until the trusted CAs change (leaves of open
// streams are asked every second).
func (a *Authority) outdated(leaf *x509.Certificate) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next == nil || leaf == nil {
		return false
	}
	v, ok := a.checked[leaf]
	if !ok {
		v = leaf.CheckSignatureFrom(a.next.Cert) != nil
		if len(a.checked) > 100000 {
			clear(a.checked)
		}
		a.checked[leaf] = v
	}
	return v
}

// generation counts the changes of the trusted CAs.
func (a *Authority) generation() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gen
}

// changed records a change of the trusted CAs, with a.mu held.
func (a *Authority) changed() {
	a.trust = a.pool()
	a.gen++
	a.checked = map[*x509.Certificate]bool{}
}

// RotationStatus is the relay CA's part of the server's /status.
type RotationStatus struct {
	Phase string `json:"phase"`
	// Since is when the rotation started (trust-both).
	Since time.Time `json:"since,omitzero"`
	// Current and Next are the SHA-256 fingerprints of the CA in service and of the new one;
	// CurrentNotAfter and NextNotAfter their expiries.
	Current         string    `json:"current"`
	CurrentNotAfter time.Time `json:"currentNotAfter"`
	Next            string    `json:"next,omitempty"`
	NextNotAfter    time.Time `json:"nextNotAfter,omitzero"`
	// Pending are the connected clusters whose agent still holds a certificate of the old CA.
	Pending []string `json:"pendingClusters,omitempty"`
	// LastCompleted is when the last rotation dropped its old CA (since this server started).
	LastCompleted time.Time `json:"lastCompleted,omitzero"`
}

func (a *Authority) status() RotationStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := RotationStatus{Phase: PhaseIdle, Current: fingerprint(a.current.Cert), CurrentNotAfter: a.current.Cert.NotAfter}
	if a.next != nil {
		st.Phase, st.Since, st.Next, st.NextNotAfter = PhaseTrustBoth, a.started, fingerprint(a.next.Cert), a.next.Cert.NotAfter
	}
	return st
}

// ErrRotating is returned by Start when a rotation is already under way with another CA.
var ErrRotating = errors.New("a relay CA rotation is already under way")

// Start begins a rotation to next (generated when nil): both CAs are trusted, the new one
// signs. Starting again with the same CA, or with none while rotating, resumes.
func (a *Authority) Start(next *pki.CA) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next != nil {
		if next != nil && !next.Cert.Equal(a.next.Cert) {
			return false, fmt.Errorf("%w to the CA %s (started %s): complete it first", ErrRotating, fingerprint(a.next.Cert)[:16], a.started.Format(time.RFC3339))
		}
		return false, nil
	}
	if next == nil {
		if a.cfg.BYO {
			return false, errors.New("the relay CA was brought with --relay-ca-cert: give the new CA's certificate and key (ca rotate relay --new-ca-cert/--new-ca-key)")
		}
		var err error
		if next, err = pki.NewCA(a.current.TrustDomain, 10*365*24*time.Hour); err != nil {
			return false, fmt.Errorf("generate the new relay CA: %w", err)
		}
	}
	if next.TrustDomain != a.current.TrustDomain {
		return false, fmt.Errorf("new relay CA: trust domain %q differs from the current %q", next.TrustDomain, a.current.TrustDomain)
	}
	if next.Cert.Equal(a.current.Cert) {
		return false, errors.New("new relay CA: it is the CA already in service")
	}
	if a.cfg.Dir != "" {
		keyPEM, err := pki.KeyPEM(next.Key)
		if err != nil {
			return false, err
		}
		if err := pki.WriteKeyPair(filepath.Join(a.cfg.Dir, caNextCert), filepath.Join(a.cfg.Dir, caNextKey), next.CertPEM, keyPEM); err != nil {
			return false, fmt.Errorf("persist the new relay CA: %w", err)
		}
	}
	a.next, a.started = next, time.Now().UTC()
	a.changed()
	return true, nil
}

// complete drops the old CA: the new one becomes the only trusted CA and issues the serving
// certificate; the old one's certificate is archived (and, when generated, its files).
func (a *Authority) complete() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next == nil {
		return nil
	}
	old, next := a.current, a.next
	if a.cfg.Dir != "" {
		keyPEM, err := pki.KeyPEM(next.Key)
		if err != nil {
			return err
		}
		// Install the new CA as <data-dir>/relay-ca.crt|key, then archive the old one, then
		// remove the "next" files: a crash in between leaves next equal to the installed CA,
		// which the start clears (or, with --relay-ca-cert, resumes the rotation).
		if err := pki.WriteKeyPair(filepath.Join(a.cfg.Dir, pki.CACertName), filepath.Join(a.cfg.Dir, caKeyFile), next.CertPEM, keyPEM); err != nil {
			return fmt.Errorf("install the new relay CA: %w", err)
		}
		if err := archive(a.cfg.Dir, old); err != nil {
			return err
		}
		if err := removeNext(a.cfg.Dir); err != nil {
			return err
		}
	}
	a.current, a.next = next, nil
	a.changed()
	if err := a.issueServing(); err != nil {
		return err
	}
	if a.cfg.OnChange != nil {
		a.cfg.OnChange(next)
	}
	return nil
}

func removeNext(dir string) error {
	for _, f := range []string{caNextCert, caNextKey} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	return nil
}

func fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// archive keeps the dropped CA's certificate (and key, when the server generated it) under
// <dir>/relay-ca-archive/<fingerprint>.crt: a server started with it again refuses to.
func archive(dir string, old *pki.CA) error {
	ad := filepath.Join(dir, caArchive)
	if err := os.MkdirAll(ad, 0o700); err != nil {
		return fmt.Errorf("archive the old relay CA: %w", err)
	}
	keyPEM, err := pki.KeyPEM(old.Key)
	if err != nil {
		return err
	}
	base := filepath.Join(ad, fingerprint(old.Cert))
	if err := pki.WriteKeyPair(base+".crt", base+".key", old.CertPEM, keyPEM); err != nil {
		return fmt.Errorf("archive the old relay CA: %w", err)
	}
	return nil
}

// archived reports whether cert was dropped by a rotation, and when.
func archived(dir string, cert *x509.Certificate) (bool, time.Time) {
	fi, err := os.Stat(filepath.Join(dir, caArchive, fingerprint(cert)+".crt"))
	if err != nil {
		return false, time.Time{}
	}
	return true, fi.ModTime()
}
