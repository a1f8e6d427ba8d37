package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meshrelay/meshrelay/internal/pki"
)

// adminCert is the admin API's serving certificate: issued from the relay CA at every start,
// or the --admin-tls-cert-file pair, read again when its files change. nil means plain HTTP
// (--admin-plaintext, loopback only).
type adminCert struct {
	issued atomic.Pointer[tls.Certificate] // issued from the relay CA (again when it rotates)
	files  *pki.KeyPairFiles               // or brought by the operator
}

// loadAdminCert prepares the admin API's certificate, or logs that it is plain HTTP.
func loadAdminCert(cfg Config, ca *pki.CA, log *slog.Logger) (*adminCert, error) {
	switch {
	case cfg.AdminPlaintext: // Validate allows it on loopback only
		log.Warn("admin api is plain http: the admin token and snapshots with private keys are not encrypted on loopback",
			"address", cfg.AdminAddress, "flag", "--admin-plaintext")
		return nil, nil
	case cfg.AdminTLSCert != "":
		files, err := pki.LoadKeyPairFiles(cfg.AdminTLSCert, cfg.AdminTLSKey, func(err error) {
			log.Error("admin certificate not reloaded", "certFile", cfg.AdminTLSCert, "keyFile", cfg.AdminTLSKey, "error", err)
		})
		if err != nil {
			return nil, fmt.Errorf("--admin-tls-cert-file: %w", err)
		}
		return &adminCert{files: files}, nil
	}
	a := &adminCert{}
	if err := a.reissue(cfg, ca); err != nil {
		return nil, err
	}
	return a, nil
}

// reissue issues the admin certificate from ca (a rotated relay CA); it keeps the
// operator's --admin-tls-cert-file.
func (a *adminCert) reissue(cfg Config, ca *pki.CA) error {
	if a == nil || a.files != nil {
		return nil
	}
	cert, _, _, err := ca.IssueServer(adminHosts(cfg), 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("issue admin serving certificate: %w", err)
	}
	a.issued.Store(&cert)
	return nil
}

// adminHosts are the relay serving certificate's names plus the --admin-address host when it
// names one (not every interface).
func adminHosts(cfg Config) []string {
	hosts := serverHosts(cfg)
	host, _, err := net.SplitHostPort(cfg.AdminAddress)
	if ip := net.ParseIP(host); err == nil && host != "" && (ip == nil || !ip.IsUnspecified()) && !slices.Contains(hosts, host) {
		hosts = append(hosts, host)
	}
	return hosts
}

// tlsConfig is the admin server's TLS configuration; nil for plain HTTP.
func (a *adminCert) tlsConfig() *tls.Config {
	if a == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if a.files != nil {
			return a.files.GetCertificate(hello)
		}
		return a.issued.Load(), nil
	}}
}

func (a *adminCert) notAfter() time.Time {
	if a.files != nil {
		return a.files.NotAfter()
	}
	return a.issued.Load().Leaf.NotAfter
}

func (a *adminCert) errText() string {
	if a.files != nil {
		if err := a.files.Err(); err != nil {
			return err.Error()
		}
	}
	return ""
}
