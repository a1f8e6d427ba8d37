package cli

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	vcs := func(rev, time, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: time}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "1eb6f3f749636c9bae09eff7fef945d4c31c07ea"
	tests := []struct {
		name    string
		ldflags string
		bi      *debug.BuildInfo
		want    string   // Version
		lines   []string // in the printed text
	}{
		{"ldflags win", "v1.2.3", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "2026-12-06T12:34:26Z", "false")},
			"v1.2.3", []string{"meshrelay v1.2.3\n", "revision:  " + rev + "\n", "committed: 2026-12-06T12:34:26Z", "go:        go1.26.8 "}},
		{"go build in a clone: pseudo-version", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261206123426-1eb6f3f74963+dirty"}, Settings: vcs(rev, "2026-12-06T12:34:26Z", "true")},
			"v0.0.0-20261206123426-1eb6f3f74963+dirty", []string{"revision:  " + rev + " (with uncommitted changes)"}},
		{"vcs without module version", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "2026-12-06T12:34:26Z", "true")},
			"devel-1eb6f3f74963-dirty", []string{"meshrelay devel-1eb6f3f74963-dirty\n"}},
		{"go run: nothing stamped", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"devel", []string{"meshrelay devel\n", "revision:  unknown (built without VCS information", "make build", "go:        go1.26.8"}},
		{"no build info", "", nil, "devel", []string{"revision:  unknown"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := readBuildVersion(tc.ldflags, tc.bi)
			if v.Version != tc.want {
				t.Errorf("Version = %q, want %q", v.Version, tc.want)
			}
			var b strings.Builder
			v.write(&b)
			for _, l := range tc.lines {
				if !strings.Contains(b.String(), l) {
					t.Errorf("printed\n%s\nlacks %q", b.String(), l)
				}
			}
		})
	}
}
