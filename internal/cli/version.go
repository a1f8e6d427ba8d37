package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X github.com/meshrelay/meshrelay/internal/cli.Version=…"
// (make build and the Dockerfile do); without it the version comes from the build
// information the Go toolchain embeds.
var Version = ""

// buildVersion is what a binary knows about its own build.
type buildVersion struct {
	Version   string // e.g. v1.2.0, a pseudo-version, devel-<rev>[-dirty] or devel
	Revision  string // the VCS commit, "" when unknown
	Time      string // the commit's time, "" when unknown
	Modified  bool   // the working tree had uncommitted changes
	GoVersion string
	Platform  string
}

// readBuildVersion combines the -ldflags version (may be empty) with the embedded build
// information (bi nil when there is none). `go build` and `go install` in a git clone
// embed the module's (pseudo-)version and vcs.revision, vcs.time and vcs.modified; `go run`
// does not (unless -buildvcs=true), nor does any build with -buildvcs=false or from a
// directory the toolchain does not recognise as a git checkout.
func readBuildVersion(ldflags string, bi *debug.BuildInfo) buildVersion {
	v := buildVersion{Version: ldflags, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		if v.Version == "" {
			v.Version = "devel"
		}
		return v
	}
	if bi.GoVersion != "" {
		v.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	switch {
	case v.Version != "":
	case bi.Main.Version != "" && bi.Main.Version != "(devel)":
		v.Version = bi.Main.Version // a release tag or a pseudo-version naming the commit
	case v.Revision != "":
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v.Version = "devel-" + rev
		if v.Modified {
			v.Version += "-dirty"
		}
	default:
		v.Version = "devel"
	}
	return v
}

// version is this binary's version in one word: what `meshrelay version` prints first and
// what the agent reports to the server.
func version() string { return currentVersion().Version }

func currentVersion() buildVersion {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return readBuildVersion(Version, bi)
}

// write prints the version and what is known of the build.
func (v buildVersion) write(w io.Writer) {
	fmt.Fprintf(w, "meshrelay %s\n", v.Version)
	switch {
	case v.Revision != "":
		state := ""
		if v.Modified {
			state = " (with uncommitted changes)"
		}
		fmt.Fprintf(w, "  revision:  %s%s\n", v.Revision, state)
		if v.Time != "" {
			fmt.Fprintf(w, "  committed: %s\n", v.Time)
		}
	case v.Version == "devel":
		fmt.Fprintln(w, "  revision:  unknown (built without VCS information: go run, -buildvcs=false, or outside a git clone; `make build` stamps it)")
	}
	fmt.Fprintf(w, "  go:        %s %s\n", v.GoVersion, v.Platform)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the meshrelay version and build information",
		Long: `Print the version (a release tag, a Go pseudo-version naming the commit, or devel-<commit>),
the commit and its time, whether the tree had uncommitted changes, and the Go version.
Agents report the same version to the server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			currentVersion().write(cmd.OutOrStdout())
			return nil
		},
	}
}
