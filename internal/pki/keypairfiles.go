package pki

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// KeyPairFiles serves a certificate and key kept in files (a bring-your-own serving
// certificate, renewed by cert-manager or by hand): every TLS handshake checks the files'
// size and modification time and reads them again when either changed, so a renewed pair
// is served without a restart. A pair that fails to load keeps the previous one in service;
// Err reports the failure until a good pair is read. Safe for concurrent use.
type KeyPairFiles struct {
	certFile, keyFile string
	onError           func(error) // called once per failed change

	mu    sync.Mutex // guards cert, stamp and err
	cert  *tls.Certificate
	stamp string // size and modification time of both files at the last read
	err   error  // of the last read; nil when cert is what the files hold
}

// LoadKeyPairFiles reads the pair once (an error stops the caller at start); onError, when
// not nil, is called with the error of every later change that cannot be loaded.
func LoadKeyPairFiles(certFile, keyFile string, onError func(error)) (*KeyPairFiles, error) {
	k := &KeyPairFiles{certFile: certFile, keyFile: keyFile, onError: onError}
	cert, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	k.cert, k.stamp = &cert, k.fileStamp()
	return k, nil
}

// GetCertificate is a tls.Config.GetCertificate returning the current pair.
func (k *KeyPairFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.current(), nil
}

// NotAfter is the expiry of the certificate in service.
func (k *KeyPairFiles) NotAfter() time.Time { return k.current().Leaf.NotAfter }

// Err is why the files' current content is not in service (nil when it is).
func (k *KeyPairFiles) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// current reloads the pair when the files changed and returns the pair in service.
func (k *KeyPairFiles) current() *tls.Certificate {
	stamp := k.fileStamp()
	k.mu.Lock()
	defer k.mu.Unlock()
	if stamp == k.stamp {
		return k.cert
	}
	k.stamp = stamp
	cert, err := LoadKeyPair(k.certFile, k.keyFile)
	if err != nil {
		k.err = fmt.Errorf("reload: %w; the previous certificate (expires %s) stays in service", err, k.cert.Leaf.NotAfter.Format(time.RFC3339))
		if k.onError != nil {
			k.onError(k.err)
		}
		return k.cert
	}
	k.cert, k.err = &cert, nil
	return k.cert
}

func (k *KeyPairFiles) fileStamp() string {
	var s string
	for _, f := range []string{k.certFile, k.keyFile} {
		fi, err := os.Stat(f) // follows symlinks: a Kubernetes Secret volume swaps its ..data link
		if err != nil {
			s += f + " missing;"
			continue
		}
		s += fmt.Sprintf("%d@%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s
}
