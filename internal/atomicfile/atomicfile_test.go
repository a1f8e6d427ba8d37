package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	for _, content := range []string{"first", "second, longer"} {
		if err := Write(name, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(name)
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
		if fi, _ := os.Stat(name); fi.Mode().Perm() != 0o640 {
			t.Fatalf("mode %v", fi.Mode())
		}
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left %v", entries)
	}
}

// A failed write leaves the old file and no temporary file.
func TestWriteFailureLeavesOld(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	if err := os.Mkdir(name, 0o700); err != nil { // renaming a file over a directory fails
		t.Fatal(err)
	}
	if err := Write(name, []byte("x"), 0o600); err == nil {
		t.Fatal("no error")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if IsTemp(e.Name()) {
			t.Fatalf("temporary file %s left", e.Name())
		}
	}
	if fi, err := os.Stat(name); err != nil || !fi.IsDir() {
		t.Fatalf("old entry damaged: %v %v", fi, err)
	}
}
