package agent

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A second holder of one state directory is refused with the holder named, and the directory
// is free again once released. The second holder is another process, as in real use (flock
// locks belong to open files, so a second open in this process conflicts the same way).
func TestLockStateDir(t *testing.T) {
	dir := t.TempDir()
	release, err := lockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockStateDir(dir)
	if !errors.Is(err, ErrStateDirInUse) {
		t.Fatalf("second lock: got %v, want ErrStateDirInUse", err)
	}
	if !strings.Contains(err.Error(), "--state-dir") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the flag and the directory", err)
	}
	// flock(1) from util-linux, when present, sees the lock from another process too.
	if flock, lerr := exec.LookPath("flock"); lerr == nil {
		if out, err := exec.Command(flock, "-n", filepath.Join(dir, stateLockFile), "true").CombinedOutput(); err == nil {
			t.Errorf("another process took the held lock (%s)", out)
		}
	}
	release()
	release2, err := lockStateDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	release2()
	if _, err := os.Stat(filepath.Join(dir, stateLockFile)); err != nil {
		t.Fatal(err)
	}
}
