package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/internal/admin"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// meshRotation moves the mesh CA from phase to phase through the admin API, each step only
// once every connected cluster acknowledged the outputs of the previous one.
type meshRotation struct {
	auth   *pki.MeshAuthority
	issuer *pki.MeshIssuer
	rec    *reconcile.Reconciler
	conns  func() map[string]relay.Connection
	leader func() bool // this server issues the mesh identities
	log    *slog.Logger

	mu    sync.Mutex
	waits map[string]outputWaits // by cluster: /status and /metrics ask for every cluster
}

// outputWaits is meshOutputWaits's answer for the output resources and phase it was asked.
type outputWaits struct {
	ca, id string // the hashes of the output's two mesh Secrets
	signer *pki.CA
	trust  string
	waits  string
}

// apply hands the authority's signer and trust to the issuer and re-translates.
func (m *meshRotation) apply() {
	m.issuer.SetCA(m.auth.Signer(), m.auth.Trust())
	m.rec.Kick()
}

func caInfo(ca *pki.CA) configapi.MeshCAInfo {
	return configapi.MeshCAInfo{Subject: ca.Cert.Subject.CommonName, Fingerprint: pki.Fingerprint(ca), NotAfter: ca.Cert.NotAfter}
}

// status judges every registered cluster's output and acknowledgement against the phase.
func (m *meshRotation) status() configapi.MeshCAStatus {
	phase, since := m.auth.Phase()
	current, next := m.auth.CAs()
	signer, trust := m.auth.Signer(), m.auth.Trust()
	st := configapi.MeshCAStatus{Phase: phase, Since: since, Signer: caInfo(signer), Trusted: []configapi.MeshCAInfo{caInfo(current)}, Ready: true}
	if next != nil {
		st.Trusted = append(st.Trusted, caInfo(next))
	}
	if err := m.issuer.IstioError(); err != nil {
		st.IstioCAError = err.Error()
	}
	conns := m.conns()
	for _, cs := range m.rec.Status().Clusters {
		_, connected := conns[cs.Name]
		c := configapi.MeshCACluster{Name: cs.Name, Connected: connected}
		c.Waiting = m.outputWaits(cs.Name, m.rec.Output(cs.Name), signer, trust)
		if c.Waiting == "" && !cs.InSync {
			c.Waiting = "its agent has not acknowledged the output with the new certificates"
		}
		c.Done = c.Waiting == ""
		if !c.Done && connected {
			st.Ready = false
		}
		if !connected && !c.Done {
			c.Waiting += " (not connected: it gets them when its agent reconnects)"
		}
		st.Clusters = append(st.Clusters, c)
	}
	m.mu.Lock()
	if len(m.waits) > len(st.Clusters) { // forget deregistered clusters
		registered := make(map[string]bool, len(st.Clusters))
		for _, c := range st.Clusters {
			registered[c.Name] = true
		}
		for c := range m.waits {
			if !registered[c] {
				delete(m.waits, c)
			}
		}
	}
	m.mu.Unlock()
	return st
}

// outputWaits is meshOutputWaits, decoding and verifying a cluster's mesh Secrets only when
// they or the phase changed since the last time it was asked.
func (m *meshRotation) outputWaits(cluster string, out *snapshot.Snapshot, signer *pki.CA, trust []byte) string {
	if out == nil {
		return meshOutputWaits(out, signer, trust)
	}
	key := outputWaits{ca: out.Resources[meshCAKey].Hash, id: out.Resources[meshIdentityKey].Hash, signer: signer, trust: string(trust)}
	m.mu.Lock()
	cached, ok := m.waits[cluster]
	m.mu.Unlock()
	if ok && cached.ca == key.ca && cached.id == key.id && cached.signer == key.signer && cached.trust == key.trust {
		return cached.waits
	}
	key.waits = meshOutputWaits(out, signer, trust)
	m.mu.Lock()
	if m.waits == nil {
		m.waits = map[string]outputWaits{}
	}
	m.waits[cluster] = key
	m.mu.Unlock()
	return key.waits
}

var (
	meshCAKey       = envoyres.KindSecret + "//" + envoyres.MeshCASecret
	meshIdentityKey = envoyres.KindSecret + "//" + envoyres.MeshIdentitySecret
)

// meshOutputWaits says what a cluster's output lacks for the phase: the trust bundle must
// be exactly trust and the identity signed by signer. An output without mesh certificates
// (no gateway of the cluster uses them) lacks nothing.
func meshOutputWaits(out *snapshot.Snapshot, signer *pki.CA, trust []byte) string {
	if out == nil {
		return "no output translated yet"
	}
	var ca, id *tlsv3.Secret
	// Two lookups, not a walk over the output: /status asks for every cluster.
	for _, key := range []string{meshCAKey, meshIdentityKey} {
		r, ok := out.Resources[key]
		if !ok {
			continue
		}
		_, msg, err := envoyres.Decode(r)
		if err != nil {
			return err.Error()
		}
		if s, ok := msg.(*tlsv3.Secret); ok && s.GetName() == envoyres.MeshCASecret {
			ca = s
		} else if ok {
			id = s
		}
	}
	if ca != nil && !bytes.Equal(ca.GetValidationContext().GetTrustedCa().GetInlineBytes(), trust) {
		return "its output does not carry the trust bundle of this phase yet"
	}
	if id != nil {
		leaf, err := pki.ParseCertPEM(id.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
		if err != nil || leaf.CheckSignatureFrom(signer.Cert) != nil {
			return "its output's mesh identity is not issued by " + signer.Cert.Subject.CommonName + " yet"
		}
	}
	return ""
}

// register adds the rotation's routes to the admin API (behind the admin token).
func (m *meshRotation) register(mux interface{ Handle(string, http.Handler) }) {
	mux.Handle("GET "+configapi.MeshCAPath, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		admin.WriteJSON(w, http.StatusOK, m.status())
	}))
	mux.Handle("POST "+configapi.MeshCARotatePath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req configapi.MeshCARotateRequest
		if !m.decode(w, r, &req) {
			return
		}
		var next *pki.CA
		current, inRotation := m.auth.CAs()
		var err error
		switch {
		case len(req.CertPEM) > 0 || len(req.KeyPEM) > 0:
			if next, err = pki.ParseCA(req.CertPEM, req.KeyPEM, current.TrustDomain); err != nil {
				http.Error(w, "new mesh CA (--cert, --key): "+err.Error(), http.StatusBadRequest)
				return
			}
		case inRotation == nil:
			if next, err = pki.NewMeshCA(current.TrustDomain); err != nil {
				http.Error(w, "generate the new mesh CA: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		if err := m.auth.Begin(next); err != nil {
			m.refuse(w, err)
			return
		}
		m.apply()
		phase, _ := m.auth.Phase()
		_, n := m.auth.CAs()
		m.log.Info("mesh ca rotation", "phase", phase, "next", n.Cert.Subject.CommonName, "sha256", pki.Fingerprint(n))
		admin.WriteJSON(w, http.StatusOK, m.status())
	}))
	mux.Handle("POST "+configapi.MeshCAAdvancePath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req configapi.MeshCAAdvanceRequest
		if !m.decode(w, r, &req) {
			return
		}
		st := m.status()
		if st.Phase != req.From {
			m.refuse(w, fmt.Errorf("%w: asked to leave phase %q, the rotation is in phase %q", pki.ErrRotationPhase, req.From, st.Phase))
			return
		}
		if !st.Ready {
			var waits []string
			for _, c := range st.Clusters {
				if !c.Done && c.Connected {
					waits = append(waits, c.Name+": "+c.Waiting)
				}
			}
			m.log.Warn("mesh ca rotation waits", "phase", st.Phase, "clusters", strings.Join(waits, "; "))
			http.Error(w, fmt.Sprintf("mesh CA rotation stays in phase %s: %s", st.Phase, strings.Join(waits, "; ")), http.StatusConflict)
			return
		}
		var err error
		switch req.From {
		case pki.PhaseTrust:
			err = m.auth.Sign()
		case pki.PhaseSign:
			err = m.auth.Finish()
		default:
			err = fmt.Errorf("%w: no rotation in progress", pki.ErrRotationPhase)
		}
		if err != nil {
			m.refuse(w, err)
			return
		}
		m.apply()
		phase, _ := m.auth.Phase()
		m.log.Info("mesh ca rotation", "phase", phase, "signer", m.auth.Signer().Cert.Subject.CommonName)
		admin.WriteJSON(w, http.StatusOK, m.status())
	}))
}

// decode reads a JSON request; false when it answered with an error.
func (m *meshRotation) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if !m.leader() {
		m.log.Warn("mesh ca rotation refused", "reason", "not the leader")
		http.Error(w, "this replica does not issue the mesh certificates: send the rotation to the leader of the active management cluster (see `meshrelay check`)", http.StatusConflict)
		return false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil && len(b) > 0 {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func (m *meshRotation) refuse(w http.ResponseWriter, err error) {
	m.log.Warn("mesh ca rotation refused", "error", err)
	code := http.StatusInternalServerError
	if errors.Is(err, pki.ErrRotationPhase) {
		code = http.StatusConflict
	}
	http.Error(w, err.Error(), code)
}

// metrics registers the rotation's phase, the clusters it waits for and the signer's expiry.
func (m *meshRotation) metrics(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_mesh_ca_rotation_phase",
			Help: "Phase of the mesh CA rotation: 0 none, 1 trust (old CA signs, both trusted), 2 sign (new CA signs, both trusted)."},
			func() float64 {
				phase, _ := m.auth.Phase()
				return float64(slices.Index([]string{pki.PhaseNone, pki.PhaseTrust, pki.PhaseSign}, phase))
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_mesh_ca_rotation_pending_clusters",
			Help: "Connected clusters whose gateways do not have the mesh certificates of the current phase yet (acknowledged)."},
			func() float64 {
				n := 0
				for _, c := range m.status().Clusters {
					if c.Connected && !c.Done {
						n++
					}
				}
				return float64(n)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_istio_ca_issue_failing",
			Help: "1 while a cluster's Istio workload CA (cacerts) cannot be issued (see /status meshCA.istioCAError), else 0."},
			func() float64 {
				if m.issuer.IstioError() != nil {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_mesh_ca_expiry_timestamp_seconds",
			Help: "When the mesh CA that signs the clusters' identities expires (Unix seconds)."},
			func() float64 { return float64(m.auth.Signer().Cert.NotAfter.Unix()) }),
	)
}
