// Package flagcheck checks, before a process does any network I/O, the flag values that name
// something on the machine: directories and files that must exist, directories it will
// create, addresses it listens on. Every error names the flag and the value, so that a
// mistake is reported at start and not as a silent stall later.
package flagcheck

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"syscall"
)

// Dir checks that path, the value of flag, is an existing directory that can be read.
func Dir(flag, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: no such directory", flag, path)
	case err != nil:
		return fmt.Errorf("%s %s: %w", flag, path, err)
	case !fi.IsDir():
		return fmt.Errorf("%s %s: not a directory", flag, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	defer f.Close()
	if _, err := f.ReadDir(1); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return nil
}

// File checks that path, the value of flag, is an existing regular file that can be read.
func File(flag, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: no such file", flag, path)
	case err != nil:
		return fmt.Errorf("%s %s: %w", flag, path, err)
	case fi.IsDir():
		return fmt.Errorf("%s %s: is a directory, want a file", flag, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return f.Close()
}

// MakeDir creates path, the value of flag, with its parents (perm), unless it exists; it
// must end up a directory.
func MakeDir(flag, path string, perm fs.FileMode) error {
	if err := os.MkdirAll(path, perm); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = fmt.Errorf("%s: %w", pe.Path, pe.Err) // MkdirAll names the failing part
		}
		return fmt.Errorf("%s %s: cannot create directory: %w", flag, path, err)
	}
	return nil
}

// Listen listens on the TCP address addr, the value of flag. A taken address is reported
// as such, naming the flag, with hint (what to do about it).
func Listen(flag, addr, hint string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, ListenError(flag, addr, hint, err)
	}
	return ln, nil
}

// ListenError names the flag of an address that could not be bound; a taken address gets
// hint.
func ListenError(flag, addr, hint string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s %s: %w (%s)", flag, addr, syscall.EADDRINUSE, hint)
	}
	return fmt.Errorf("%s %s: %w", flag, addr, err)
}

// Loopback reports whether host (a host name or IP, without port or brackets) names this
// machine's loopback interface only: localhost or an address of 127.0.0.0/8 or ::1. An empty
// host (every interface) is not.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
