package pki

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKeyPairFilesReload: a renewed pair is served at the next handshake without a restart;
// a broken one keeps the previous pair in service and is reported until a good pair comes.
func TestKeyPairFilesReload(t *testing.T) {
	ca := mustCA(t, td)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(hosts ...string) string {
		t.Helper()
		_, certPEM, keyPEM, err := ca.IssueServer(hosts, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteKeyPair(certFile, keyFile, certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		return hosts[0]
	}
	served := func(k *KeyPairFiles) string {
		t.Helper()
		c, err := k.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}

	write("first.example")
	var reported []error
	k, err := LoadKeyPairFiles(certFile, keyFile, func(err error) { reported = append(reported, err) })
	if err != nil {
		t.Fatal(err)
	}
	if got := served(k); got != "first.example" {
		t.Fatalf("serves %q, want first.example", got)
	}

	write("second.example")
	if got := served(k); got != "second.example" {
		t.Fatalf("after renewal serves %q, want second.example", got)
	}

	if err := os.WriteFile(keyFile, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := served(k); got != "second.example" {
		t.Fatalf("after a broken key serves %q, want the previous second.example", got)
	}
	served(k) // an unchanged broken file is reported once
	if len(reported) != 1 || k.Err() == nil || !strings.Contains(k.Err().Error(), "stays in service") {
		t.Fatalf("broken pair: reported %v, Err %v", reported, k.Err())
	}

	write("third.example")
	if got := served(k); got != "third.example" || k.Err() != nil {
		t.Fatalf("after repair serves %q (Err %v), want third.example", got, k.Err())
	}
	if k.NotAfter().IsZero() {
		t.Error("NotAfter is zero")
	}

	if _, err := LoadKeyPairFiles(filepath.Join(dir, "missing.crt"), keyFile, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing certificate file: %v, want not exist", err)
	}
}
