package pki

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/internal/atomicfile"
)

// Mesh CA rotation phases (docs/adr/0009-mesh-ca-rotation-and-istio-cacerts.md).
const (
	// PhaseNone: no rotation; the current CA signs and is the only one trusted.
	PhaseNone = ""
	// PhaseTrust: the current CA still signs, both the current and the next are trusted.
	PhaseTrust = "trust"
	// PhaseSign: the next CA signs, both are still trusted.
	PhaseSign = "sign"
)

// ErrRotationPhase marks a rotation step asked for in the wrong phase.
var ErrRotationPhase = errors.New("mesh CA rotation is in another phase")

// Files of the mesh CA and its rotation in a server's data directory.
const (
	meshCACert      = "mesh-ca.crt"
	meshCAKey       = "mesh-ca.key"
	meshNextCACert  = "mesh-ca-next.crt"
	meshNextCAKey   = "mesh-ca-next.key"
	meshRotationDoc = "mesh-ca-rotation.json"
)

// MeshCAFiles are the default mesh CA's files in a data directory.
func MeshCAFiles(dir string) (certFile, keyFile string) {
	return filepath.Join(dir, meshCACert), filepath.Join(dir, meshCAKey)
}

// meshRotation is what the data directory keeps of a rotation.
type meshRotation struct {
	Phase string    `json:"phase"`
	Since time.Time `json:"since,omitzero"`
	// Retired are the SHA-256 fingerprints of CAs a finished rotation dropped: a server
	// started with one of them again (an old --mesh-ca-cert) is refused.
	Retired []string `json:"retired,omitempty"`
}

// MeshAuthority is the mesh CA and its rotation: which CA signs the clusters' identities
// and which CAs they trust. A rotation goes PhaseNone → PhaseTrust → PhaseSign → PhaseNone,
// each step persisted in the data directory before it takes effect, so a restarted server
// resumes where it was. Safe for concurrent use.
type MeshAuthority struct {
	dir string

	mu      sync.Mutex // guards current, next and state
	current *CA
	next    *CA // nil in PhaseNone
	state   meshRotation
}

// OpenMeshAuthority resumes the rotation recorded in dir with current as the CA in service
// before it (the data directory's mesh-ca.crt, or --mesh-ca-cert).
func OpenMeshAuthority(dir string, current *CA) (*MeshAuthority, error) {
	a := &MeshAuthority{dir: dir, current: current}
	b, err := os.ReadFile(filepath.Join(dir, meshRotationDoc))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return a, nil
	case err != nil:
		return nil, fmt.Errorf("read mesh CA rotation: %w", err)
	}
	if err := json.Unmarshal(b, &a.state); err != nil {
		return nil, fmt.Errorf("read mesh CA rotation %s: %w", filepath.Join(dir, meshRotationDoc), err)
	}
	if slices.Contains(a.state.Retired, Fingerprint(current)) {
		return nil, fmt.Errorf("mesh CA %q was retired by `meshrelay ca rotate mesh` (%s): no gateway trusts it any more; start with the new CA "+
			"(%s, or the files given to the rotation)", current.Cert.Subject.CommonName, filepath.Join(dir, meshRotationDoc), filepath.Join(dir, meshCACert))
	}
	switch a.state.Phase {
	case PhaseNone:
	case PhaseTrust, PhaseSign:
		if a.next, err = LoadCA(filepath.Join(dir, meshNextCACert), filepath.Join(dir, meshNextCAKey), current.TrustDomain); err != nil {
			return nil, fmt.Errorf("resume mesh CA rotation in phase %s: %w", a.state.Phase, err)
		}
	default:
		return nil, fmt.Errorf("mesh CA rotation %s: unknown phase %q", filepath.Join(dir, meshRotationDoc), a.state.Phase)
	}
	return a, nil
}

// Fingerprint is the SHA-256 of the CA's certificate, hex.
func Fingerprint(ca *CA) string {
	sum := sha256.Sum256(ca.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Phase returns the rotation's phase and since when it holds.
func (a *MeshAuthority) Phase() (string, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state.Phase, a.state.Since
}

// CAs returns the CA in service before the rotation and the next one (nil in PhaseNone).
func (a *MeshAuthority) CAs() (current, next *CA) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current, a.next
}

// Signer is the CA that issues identities now.
func (a *MeshAuthority) Signer() *CA {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state.Phase == PhaseSign {
		return a.next
	}
	return a.current
}

// Trust is the PEM bundle of every CA trusted now: the current one, and the next one
// during a rotation.
func (a *MeshAuthority) Trust() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.current.CertPEM)
	if a.next != nil {
		out = append(out, a.next.CertPEM...)
	}
	return out
}

// Begin starts a rotation to next (PhaseNone → PhaseTrust): next is written to the data
// directory and trusted alongside the current CA. Beginning again with the CA already in
// rotation, or with nil during a rotation, is a no-op, so an interrupted command resumes.
func (a *MeshAuthority) Begin(next *CA) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state.Phase != PhaseNone {
		if next == nil || Fingerprint(next) == Fingerprint(a.next) {
			return nil
		}
		return fmt.Errorf("%w: a rotation to %q is in phase %s; finish it before rotating to another CA", ErrRotationPhase, a.next.Cert.Subject.CommonName, a.state.Phase)
	}
	if next == nil {
		return errors.New("begin mesh CA rotation: no next CA")
	}
	if Fingerprint(next) == Fingerprint(a.current) {
		return fmt.Errorf("begin mesh CA rotation: %q is already the mesh CA", next.Cert.Subject.CommonName)
	}
	keyPEM, err := KeyPEM(next.Key)
	if err != nil {
		return err
	}
	if err := WriteKeyPair(filepath.Join(a.dir, meshNextCACert), filepath.Join(a.dir, meshNextCAKey), next.CertPEM, keyPEM); err != nil {
		return fmt.Errorf("begin mesh CA rotation: %w", err)
	}
	if err := a.saveLocked(meshRotation{Phase: PhaseTrust, Since: time.Now().UTC(), Retired: a.state.Retired}); err != nil {
		return err
	}
	a.next = next
	return nil
}

// Sign makes the next CA the signer (PhaseTrust → PhaseSign); a no-op in PhaseSign.
func (a *MeshAuthority) Sign() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch a.state.Phase {
	case PhaseSign:
		return nil
	case PhaseTrust:
		return a.saveLocked(meshRotation{Phase: PhaseSign, Since: time.Now().UTC(), Retired: a.state.Retired})
	}
	return fmt.Errorf("%w: sign with the next CA needs phase %s, the rotation is in phase %q", ErrRotationPhase, PhaseTrust, a.state.Phase)
}

// Finish drops the old CA (PhaseSign → PhaseNone): the next CA becomes the data
// directory's mesh-ca.crt/key and the old pair is kept as mesh-ca.crt|key.retired-<time>.
func (a *MeshAuthority) Finish() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state.Phase != PhaseSign {
		return fmt.Errorf("%w: dropping the old CA needs phase %s, the rotation is in phase %q", ErrRotationPhase, PhaseSign, a.state.Phase)
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	for _, f := range []string{meshCACert, meshCAKey} {
		p := filepath.Join(a.dir, f)
		if err := os.Rename(p, p+".retired-"+stamp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("archive the old mesh CA: %w", err)
		}
	}
	for _, f := range [][2]string{{meshNextCACert, meshCACert}, {meshNextCAKey, meshCAKey}} {
		if err := os.Rename(filepath.Join(a.dir, f[0]), filepath.Join(a.dir, f[1])); err != nil {
			return fmt.Errorf("install the new mesh CA: %w", err)
		}
	}
	retired := append(slices.Clone(a.state.Retired), Fingerprint(a.current))
	if err := a.saveLocked(meshRotation{Phase: PhaseNone, Retired: retired}); err != nil {
		return err
	}
	a.current, a.next = a.next, nil
	return nil
}

func (a *MeshAuthority) saveLocked(st meshRotation) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(a.dir, meshRotationDoc), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save mesh CA rotation: %w", err)
	}
	a.state = st
	return nil
}

// LoadOrCreateMeshCA loads the data directory's mesh CA, or creates one (NewMeshCA) when
// neither of its files exists.
func LoadOrCreateMeshCA(dir, trustDomain string) (*CA, error) {
	certFile, keyFile := MeshCAFiles(dir)
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	if !errors.Is(certErr, fs.ErrNotExist) || !errors.Is(keyErr, fs.ErrNotExist) {
		ca, _, err := LoadOrCreateCAFiles(certFile, keyFile, trustDomain) // loads, or names what is missing
		return ca, err
	}
	ca, err := NewMeshCA(trustDomain)
	if err != nil {
		return nil, err
	}
	keyPEM, err := KeyPEM(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create mesh CA directory: %w", err)
	}
	if err := WriteKeyPair(certFile, keyFile, ca.CertPEM, keyPEM); err != nil {
		return nil, err
	}
	return ca, nil
}
