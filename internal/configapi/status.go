package configapi

import (
	"time"

	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/plane"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/telemetry"
)

// DefaultDataDir is the server's --data-dir default, where it generates the admin token
// (TokenFileName) and the relay CA bundle, and where the CLI looks for them by default.
const DefaultDataDir = "meshrelay-data"

// ServerStatus is the server's /status document.
type ServerStatus struct {
	reconcile.Status
	HA                ha.Status                   `json:"ha"`
	Relay             string                      `json:"relayAddress"`
	Store             string                      `json:"store"`
	Connections       map[string]relay.Connection `json:"connections"`
	RelayCertNotAfter time.Time                   `json:"relayCertificateNotAfter"`
	RelayCANotAfter   time.Time                   `json:"relayCANotAfter"`
	// RelayCA is the relay CA's rotation: its phase and the agents still on the old CA.
	RelayCA relay.RotationStatus `json:"relayCA"`
	// AdminCertNotAfter is the expiry of the admin API's serving certificate (zero with
	// --admin-plaintext); AdminCertError says why a changed --admin-tls-cert-file pair is
	// not in service.
	AdminCertNotAfter time.Time `json:"adminCertificateNotAfter,omitzero"`
	AdminCertError    string    `json:"adminCertificateError,omitempty"`
	// Plane is every server's view of its agents (this one's first), shared through the
	// store, so that check judges the whole plane from any replica.
	Plane plane.Status `json:"plane"`
	// RateLimited are the sources (and clusters' registrations) the relay refused for
	// too many attempts in the last relay.RateLimitMemory.
	RateLimited []relay.RateLimited `json:"rateLimited,omitempty"`
	// MeshCA is the mesh CA and its rotation (`meshrelay ca rotate mesh`).
	MeshCA MeshCAStatus `json:"meshCA"`
	// StoreReplication names the last write that must not be lost (lock, applied
	// configuration, revocation) which no Redis replica acknowledged in time, until a later
	// one reaches a replica ("" when none; docs/adr/0015).
	StoreReplication string `json:"storeReplication,omitempty"`
	// OTLPExport is the state of this server's own OTLP export (--otlp-endpoint).
	OTLPExport telemetry.Status `json:"otlpExport"`
	// Telemetry is the UI's source of gateway state and traffic (nil without
	// --telemetry-prometheus-url).
	Telemetry *TelemetryStatus `json:"telemetry,omitempty"`
}

// TelemetryStatus is how the server reads the telemetry gateway's merged Prometheus
// endpoint for the UI.
type TelemetryStatus struct {
	URL string `json:"url"`
	// LastRead is the last good scrape; Error the last scrape's error, since ErrorSince.
	LastRead   time.Time `json:"lastRead,omitzero"`
	Error      string    `json:"error,omitempty"`
	ErrorSince time.Time `json:"errorSince,omitzero"`
}
