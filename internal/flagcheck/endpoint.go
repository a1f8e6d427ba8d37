package flagcheck

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Endpoint is an address flag's value that is either host:port (TCP) or a Unix domain
// socket, unix:///absolute/path or unix:relative/path (gRPC's forms).
type Endpoint struct {
	// Network is "tcp" or "unix".
	Network string
	// Address is host:port, or the socket's path.
	Address string
}

// maxSocketPath is the longest Unix socket path Linux accepts (sun_path less its NUL).
const maxSocketPath = 107

// ParseEndpoint parses addr, the value of flag.
func ParseEndpoint(flag, addr string) (Endpoint, error) {
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		path := rest
		if p, abs := strings.CutPrefix(rest, "//"); abs {
			path = p
			if !strings.HasPrefix(path, "/") {
				return Endpoint{}, fmt.Errorf("%s %q: unix:// takes an absolute path (unix:///run/x.sock), or write unix:relative/path", flag, addr)
			}
		}
		switch {
		case path == "":
			return Endpoint{}, fmt.Errorf("%s %q: no socket path", flag, addr)
		case len(path) > maxSocketPath:
			return Endpoint{}, fmt.Errorf("%s %q: socket path is %d bytes, longer than the %d a Unix socket allows", flag, addr, len(path), maxSocketPath)
		}
		return Endpoint{Network: "unix", Address: path}, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Endpoint{}, fmt.Errorf("%s %q: want host:port, unix:///absolute/path or unix:relative/path: %w", flag, addr, err)
	}
	return Endpoint{Network: "tcp", Address: addr}, nil
}

// Local reports whether the endpoint cannot be reached from another machine: a Unix socket,
// or a TCP address on loopback (see Loopback).
func (e Endpoint) Local() bool {
	if e.Network == "unix" {
		return true
	}
	host, _, _ := net.SplitHostPort(e.Address)
	return Loopback(host)
}

// String is the endpoint in the flag's syntax.
func (e Endpoint) String() string {
	if e.Network == "unix" {
		if filepath.IsAbs(e.Address) {
			return "unix://" + e.Address
		}
		return "unix:" + e.Address
	}
	return e.Address
}

// ListenUnixPrivate listens on the Unix socket path, which only this user may connect to
// (mode 0600). A socket file left by a process that is gone is removed first; one that a
// process still answers on is reported as EADDRINUSE, like a taken TCP port.
func ListenUnixPrivate(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("a process answers on %s: %w", path, syscall.EADDRINUSE)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("probe existing socket %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// Connecting needs write permission on the socket file: with the usual umask (022)
	// nobody else could connect even before this chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict socket %s to its owner: %w", path, err)
	}
	return ln, nil
}
