package flagcheck_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshrelay/meshrelay/internal/flagcheck"
)

func TestPaths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, c := range []struct {
		name string
		err  error
		want string // "" for no error
	}{
		{"dir", flagcheck.Dir("--d", dir), ""},
		{"dir missing", flagcheck.Dir("--d", missing), "--d " + missing + ": no such directory"},
		{"dir is a file", flagcheck.Dir("--d", file), "--d " + file + ": not a directory"},
		{"file", flagcheck.File("--f", file), ""},
		{"file missing", flagcheck.File("--f", missing), "--f " + missing + ": no such file"},
		{"file is a dir", flagcheck.File("--f", dir), "--f " + dir + ": is a directory"},
		{"make dir", flagcheck.MakeDir("--m", filepath.Join(dir, "a", "b"), 0o700), ""},
		{"make existing dir", flagcheck.MakeDir("--m", dir, 0o700), ""},
		{"make dir under a file", flagcheck.MakeDir("--m", filepath.Join(file, "x"), 0o700), "--m " + filepath.Join(file, "x") + ": cannot create directory: "},
	} {
		switch {
		case c.want == "" && c.err != nil:
			t.Errorf("%s: %v", c.name, c.err)
		case c.want != "" && (c.err == nil || !strings.Contains(c.err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", c.name, c.err, c.want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "a", "b")); err != nil || !fi.IsDir() {
		t.Errorf("MakeDir did not create the directory: %v", err)
	}
}

func TestListenTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	_, err = flagcheck.Listen("--x-address", addr, "give each its own --x-address")
	if !errors.Is(err, syscall.EADDRINUSE) || err.Error() != "--x-address "+addr+": address already in use (give each its own --x-address)" {
		t.Errorf("error %v, want the flag, the address, the cause and the hint", err)
	}
	_, err = flagcheck.Listen("--x-address", "no-port", "hint")
	if err == nil || !strings.HasPrefix(err.Error(), "--x-address no-port: ") || strings.Contains(err.Error(), "hint") {
		t.Errorf("bad address: %v, want the flag named and no hint", err)
	}
	l2, err := flagcheck.Listen("--x-address", "127.0.0.1:0", "hint")
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
}

// TestListenUnixPrivate: the socket is 0600; a live one is refused as in use; a stale one
// is replaced.
func TestListenUnixPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.sock")
	ln, err := flagcheck.ListenUnixPrivate(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v, want 0600", fi.Mode(), err)
	}
	if _, err := flagcheck.ListenUnixPrivate(path); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second listener: %v, want EADDRINUSE", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // leave a stale socket, as a killed process does
	ln.Close()
	ln, err = flagcheck.ListenUnixPrivate(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := flagcheck.ListenUnixPrivate(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a regular file: %v", err)
	}
}
