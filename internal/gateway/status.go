package gateway

import (
	"time"
)

// Status is the gateway's state as /status reports it.
type Status struct {
	NodeID    string           `json:"nodeId"`
	Ready     bool             `json:"ready"`
	XDS       XDSStatus        `json:"xds"`
	Listeners []ListenerStatus `json:"listeners"`
	Clusters  []ClusterStatus  `json:"clusters"`
	Secrets   []SecretStatus   `json:"secrets"`
}

// XDSStatus describes the ADS stream and the accepted versions.
type XDSStatus struct {
	Address   string    `json:"address"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	// Versions are the accepted versions by resource type (Listener, Cluster, ...).
	Versions map[string]string `json:"versions"`
	// LastError is the last stream error.
	LastError string `json:"lastError,omitempty"`
	// LastNack is the last rejected update, with its type and reason.
	LastNack string `json:"lastNack,omitempty"`
	// CertificateNotAfter is when the xDS client certificate expires (mutual TLS only).
	CertificateNotAfter time.Time `json:"certificateNotAfter,omitzero"`
}

// ListenerStatus describes a listener.
type ListenerStatus struct {
	Name         string              `json:"name"`
	Address      string              `json:"address"`
	Kind         string              `json:"kind"`
	RouteConfig  string              `json:"routeConfig,omitempty"`
	FilterChains []FilterChainStatus `json:"filterChains,omitempty"`
	// Error is set when the listener could not be bound.
	Error string `json:"error,omitempty"`
}

// FilterChainStatus describes a TCP filter chain.
type FilterChainStatus struct {
	Name        string   `json:"name"`
	ServerNames []string `json:"serverNames,omitempty"`
	TLS         bool     `json:"tls"`
	Cluster     string   `json:"cluster"`
}

// ClusterStatus describes a cluster and which priority serves it.
type ClusterStatus struct {
	Name string `json:"name"`
	// ActivePriority serves all traffic; -1 when no priority has a healthy endpoint.
	ActivePriority int `json:"activePriority"`
	// Since is when ActivePriority last changed, and Reason why.
	Since         time.Time `json:"since"`
	Reason        string    `json:"reason"`
	Changes       int       `json:"priorityChanges"`
	HealthChecked bool      `json:"healthChecked"`
	Outlier       bool      `json:"outlierDetection"`
	Loaded        bool      `json:"loadAssignmentReceived"`
	// Warming is true for a new cluster until its first health checks are done.
	Warming   bool             `json:"warming"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// EndpointStatus describes one endpoint.
type EndpointStatus struct {
	Address  string `json:"address"`
	Priority int    `json:"priority"`
	// Health is healthy, unhealthy or pending (health checked, no result yet); endpoints of
	// clusters without health checks are healthy.
	Health string `json:"health"`
	// HealthChangedAt is when Health last changed; HealthTransitions counts the changes.
	HealthChangedAt   time.Time `json:"healthChangedAt"`
	HealthTransitions int       `json:"healthTransitions"`
	LastCheckError    string    `json:"lastCheckError,omitempty"`
	EDSHealthy        bool      `json:"edsHealthy"`
	Ejected           bool      `json:"ejected"`
	EjectedUntil      time.Time `json:"ejectedUntil,omitzero"`
	Ejections         int       `json:"ejections,omitempty"`
	// Available says whether the endpoint may take traffic (healthy, not ejected).
	Available bool `json:"available"`
	// SNI is set for endpoints reached over TLS.
	SNI string `json:"sni,omitempty"`
	TLS bool   `json:"tls"`
}

// SecretStatus describes a received secret (never its material).
type SecretStatus struct {
	Name        string    `json:"name"`
	Certificate bool      `json:"certificate"`
	NotAfter    time.Time `json:"notAfter,omitzero"`
	CAs         int       `json:"cas,omitempty"`
}

func (u *upstream) status() ClusterStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := ClusterStatus{
		Name: u.name, ActivePriority: u.active, Since: u.since, Reason: u.reason, Changes: u.changes,
		HealthChecked: u.spec.healthCheck != nil, Outlier: u.spec.outlier != nil, Loaded: u.loaded, Warming: u.warming,
		Endpoints: make([]EndpointStatus, 0, len(u.hosts)),
	}
	for _, h := range u.hosts {
		e := EndpointStatus{
			Address: h.addr, Priority: h.priority, Health: h.hc.String(), HealthChangedAt: h.changedAt,
			HealthTransitions: h.transitions, LastCheckError: h.lastCheckErr, EDSHealthy: h.edsHealthy,
			Ejected: h.ejected, Ejections: h.ejections, Available: u.availableLocked(h), TLS: h.tls != nil,
		}
		if u.spec.healthCheck == nil {
			e.Health = hcHealthy.String()
		}
		if h.ejected {
			e.EjectedUntil = h.ejectedUntil
		}
		if h.tls != nil {
			e.SNI = h.tls.sni
		}
		st.Endpoints = append(st.Endpoints, e)
	}
	return st
}

func secretStatus(s *secretSpec) SecretStatus {
	st := SecretStatus{Name: s.name, Certificate: s.cert != nil, CAs: s.caCount}
	if s.cert != nil && s.cert.Leaf != nil {
		st.NotAfter = s.cert.Leaf.NotAfter
	}
	return st
}
