// Package charts holds meshrelay's Helm charts, embedded in the binary: meshrelay-server for
// the management cluster and meshrelay-agent for every workload cluster. `meshrelay cluster
// register --install` writes the agent chart to a temporary directory for the helm binary
// (WriteDir); it imports nothing of Helm. Package charts/chartstest renders the charts with
// Helm's Go SDK for tests.
//
// The server chart's files/telemetry-gateway.yaml is a symbolic link to
// examples/telemetry/telemetry-gateway.yaml, which go:embed leaves out: helm follows it when
// it installs or packages the chart from the repository, and chartstest reads it from the
// source tree. Only the agent chart is written out by the binary (WriteDir).
package charts

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Names of the charts.
const (
	Server = "meshrelay-server"
	Agent  = "meshrelay-agent"
)

//go:embed all:meshrelay-server all:meshrelay-agent
var files embed.FS

// FS returns the charts, each in the directory of its name (meshrelay-agent/Chart.yaml, ...).
func FS() fs.FS { return files }

// Check reports whether name is a chart of this package.
func Check(name string) error {
	if name != Server && name != Agent {
		return fmt.Errorf("unknown chart %q (want %s or %s)", name, Server, Agent)
	}
	return nil
}

// WriteDir writes the files of the named chart into dir (created when missing), as a chart
// directory helm can install: dir/Chart.yaml, dir/values.yaml, dir/templates/...
func WriteDir(name, dir string) error {
	if err := Check(name); err != nil {
		return err
	}
	sub, err := fs.Sub(files, name)
	if err != nil {
		return fmt.Errorf("chart %s: %w", name, err)
	}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		return fmt.Errorf("write chart %s to %s: %w", name, dir, err)
	}
	return nil
}
