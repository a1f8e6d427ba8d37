package admin

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// buildInfo returns meshrelay_build_info: always 1, labelled with version (the binary's
// version as `meshrelay version` prints it; "devel" when the caller does not know it), the
// VCS revision the toolchain embedded ("unknown" without one) and the Go version.
func buildInfo(version string) prometheus.Collector {
	revision, goVersion := "unknown", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				revision = s.Value
			}
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
	}
	if version == "" {
		version = "devel"
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "meshrelay_build_info",
		Help:        "Always 1; the labels say which build of meshrelay serves these metrics.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	}, func() float64 { return 1 })
}
