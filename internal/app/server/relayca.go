package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/meshrelay/meshrelay/internal/admin"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/relay"
)

// maxRotateBody bounds the body of a rotation request (a CA certificate chain and its key).
const maxRotateBody = 1 << 20

// registerRelayCA adds the admin endpoints of the relay CA's lifecycle (behind the admin
// token): the rotation of the relay CA and the revocation of a cluster's certificates.
func registerRelayCA(adm *admin.Server, rs *relay.Server, trustDomain string, token func() (string, error)) {
	api := configapi.Protected(adm, token)
	api.Handle("POST /api/v1/ca/relay/rotate", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req configapi.RotateRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRotateBody)).Decode(&req); err != nil {
			http.Error(w, "rotation request: "+err.Error(), http.StatusBadRequest)
			return
		}
		var st relay.RotationStatus
		var err error
		switch req.Action {
		case "start":
			var next *pki.CA
			if next, err = newCAFromRequest(req, trustDomain); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			st, err = rs.StartRotation(next)
		case "complete":
			st, err = rs.CompleteRotation()
		default:
			http.Error(w, fmt.Sprintf("rotation request: action %q: want start or complete", req.Action), http.StatusBadRequest)
			return
		}
		if err != nil {
			code := http.StatusConflict
			if !errors.Is(err, relay.ErrRotating) {
				code = http.StatusBadRequest
			}
			http.Error(w, err.Error(), code)
			return
		}
		admin.WriteJSON(w, http.StatusOK, st)
	}))
	api.Handle("POST /api/v1/clusters/{name}/revoke", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := pki.ValidateCluster(name); err != nil {
			http.Error(w, "revoke: "+err.Error(), http.StatusBadRequest)
			return
		}
		at, err := rs.Revoke(r.Context(), name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		admin.WriteJSON(w, http.StatusOK, configapi.RevokeResult{Cluster: name, RevokedBefore: at})
	}))
}

// newCAFromRequest reads the operator's new CA from a rotation request (nil: generate).
func newCAFromRequest(req configapi.RotateRequest, trustDomain string) (*pki.CA, error) {
	if req.CACertPEM == "" && req.CAKeyPEM == "" {
		return nil, nil
	}
	if req.CACertPEM == "" || req.CAKeyPEM == "" {
		return nil, errors.New("rotation request: caCertPem and caKeyPem go together")
	}
	dir, err := os.MkdirTemp("", "meshrelay-ca-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cert, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := pki.WriteKeyPair(cert, key, []byte(req.CACertPEM), []byte(req.CAKeyPEM)); err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(cert, key, trustDomain)
	if err != nil {
		return nil, fmt.Errorf("rotation request: new CA: %w", err)
	}
	return ca, nil
}
