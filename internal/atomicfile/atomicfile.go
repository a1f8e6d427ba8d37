// Package atomicfile replaces files so that readers, and a process killed at any point, see
// the old content or the new one and never a part: the data goes to a synced temporary file
// beside the target, which is then renamed over it. SyncDir makes such renames (and new
// files) survive a power loss too.
package atomicfile

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The temporary files are named tempPrefix + random + tempSuffix, so that IsTemp recognises
// one left by a crash.
const tempPrefix, tempSuffix = ".meshrelay-", ".tmp"

// Write replaces name with data, with permissions perm, through a synced temporary file in
// the same directory. The temporary file is removed on failure. Errors are the os package's
// (they name the file); callers add what the file is.
func Write(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), tempPrefix+"*"+tempSuffix)
	if err != nil {
		return err
	}
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if err = cmp.Or(err, f.Close()); err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	return err
}

// IsTemp reports whether a file's base name is one of Write's temporary files (a crash may
// leave one behind).
func IsTemp(base string) bool {
	return strings.HasPrefix(base, tempPrefix) && strings.HasSuffix(base, tempSuffix)
}

// SyncDir syncs the directory dir, so that renames and new files in it survive a power loss.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
