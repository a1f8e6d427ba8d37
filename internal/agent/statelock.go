package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// stateLockFile is the file in the state directory that an agent holds locked while it runs.
const stateLockFile = "lock"

// ErrStateDirInUse is returned by Start when another agent holds the state directory.
var ErrStateDirInUse = errors.New("state dir in use by another agent")

// lockStateDir takes an exclusive lock on the state directory, so that two agents never share
// one: they would overwrite each other's key, certificate and last applied output, and
// report each other's inputs. The kernel releases the lock when the process exits, however it
// exits, so a crashed agent never leaves a stale lock behind. release unlocks it.
func lockStateDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, stateLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by %s; give each agent its own --state-dir",
				ErrStateDirInUse, dir, orUnknown(strings.TrimSpace(string(holder))))
		}
		return nil, fmt.Errorf("lock state dir %s: %w", dir, err)
	}
	// Name the holder for the next agent that finds the directory taken.
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "pid %d\n", os.Getpid())
	}
	return func() { f.Close() }, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "another process"
	}
	return s
}
