package configapi

import "time"

// Admin API paths of the mesh CA rotation (docs/adr/0009-mesh-ca-rotation-and-istio-cacerts.md).
const (
	MeshCAPath        = "/api/v1/ca/mesh"
	MeshCARotatePath  = "/api/v1/ca/mesh/rotate"
	MeshCAAdvancePath = "/api/v1/ca/mesh/advance"
)

// MeshCAStatus is the mesh CA and its rotation, in /status and the rotation API.
type MeshCAStatus struct {
	// Phase is "" (no rotation), "trust" (old CA signs, both trusted) or "sign" (new CA
	// signs, both trusted).
	Phase   string       `json:"phase"`
	Since   time.Time    `json:"since,omitzero"`
	Signer  MeshCAInfo   `json:"signer"`
	Trusted []MeshCAInfo `json:"trusted"`
	// Clusters says, for every registered cluster, whether the gateways have the outputs of
	// the current phase (acknowledged by its agent).
	Clusters []MeshCACluster `json:"clusters,omitempty"`
	// Ready: every connected cluster acknowledged the outputs of the current phase.
	Ready bool `json:"ready"`
	// IstioCAError says why a cluster's Istio workload CA (cacerts) could not be issued.
	IstioCAError string `json:"istioCAError,omitempty"`
}

// MeshCAInfo names a mesh CA.
type MeshCAInfo struct {
	Subject     string    `json:"subject"`
	Fingerprint string    `json:"sha256"`
	NotAfter    time.Time `json:"notAfter"`
}

// MeshCACluster is where one cluster stands in the current phase.
type MeshCACluster struct {
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Done      bool   `json:"done"`
	// Waiting says what the rotation waits for (empty when Done).
	Waiting string `json:"waiting,omitempty"`
}

// MeshCARotateRequest starts a rotation; without a certificate the server generates the
// new CA.
type MeshCARotateRequest struct {
	CertPEM []byte `json:"cert,omitempty"`
	KeyPEM  []byte `json:"key,omitempty"`
}

// MeshCAAdvanceRequest moves the rotation out of phase From, once Ready.
type MeshCAAdvanceRequest struct {
	From string `json:"from"`
}
