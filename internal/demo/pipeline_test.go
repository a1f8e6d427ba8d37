package demo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSourceTreeIsFoundFromBelowOnly(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, ok := sourceTree(wd)
	if want, _ := filepath.Abs(filepath.Join("..", "..")); !ok || root != want {
		t.Errorf("sourceTree(%s) = %q, %v; want %s", wd, root, ok, want)
	}
	// A directory of another module (and nothing above it) is not meshrelay's source tree.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if root, ok := sourceTree(other); ok {
		t.Errorf("sourceTree(%s) = %q in a directory of another module", other, root)
	}
}

// Without --collector-binary, a collector beside meshrelay or on PATH, or a source tree to
// build one in, the error says what to do — at once, with no build.
func TestFindCollectorSaysHowToGetOne(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("PATH", t.TempDir())
	c := findCollector(t.Context(), "", filepath.Join(t.TempDir(), "meshrelay"), func(string, ...any) { t.Error("findCollector built") })
	select {
	case <-c.ready:
	default:
		t.Fatal("findCollector is not done at once")
	}
	if !errors.Is(c.err, ErrNoCollector) {
		t.Fatalf("err = %v, want ErrNoCollector", c.err)
	}
	for _, want := range []string{"--collector-binary", "go build", "--telemetry=false"} {
		if !strings.Contains(c.err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, c.err)
		}
	}
	// One beside meshrelay is taken.
	dir := t.TempDir()
	beside := filepath.Join(dir, collectorName)
	if err := os.WriteFile(beside, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if c := findCollector(t.Context(), "", filepath.Join(dir, "meshrelay"), nil); c.path != beside || c.err != nil {
		t.Errorf("findCollector = %q, %v; want %s beside meshrelay", c.path, c.err, beside)
	}
	// A --collector-binary that is not executable is refused, naming the flag.
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if c := findCollector(t.Context(), plain, "", nil); c.err == nil || !strings.Contains(c.err.Error(), "--collector-binary") {
		t.Errorf("findCollector(%s) error = %v, want one naming --collector-binary", plain, c.err)
	}
}
