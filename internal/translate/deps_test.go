package translate_test

import (
	"testing"

	"github.com/meshrelay/meshrelay/internal/deptest"
)

const module = "github.com/meshrelay/meshrelay/"

// TestPureCoreDependencies keeps the translator a pure core (CONVENTIONS: pure cores import
// no gRPC, Redis, HTTP or client-go), like tailscale's deptest: nothing it depends on, directly
// or not, does I/O through a network client, a store, a process or a file watcher, and nothing
// of the server's relay or store.
func TestPureCoreDependencies(t *testing.T) {
	deptest.Forbid(t, "internal/translate", deptest.Deps(t, "."),
		"os/exec", "net/http", "database/sql", "google.golang.org/grpc", "github.com/redis",
		"k8s.io/client-go", "go.etcd.io/bbolt", "github.com/fsnotify",
		module+"internal/relay", module+"internal/snapshot/redisstore")
}

// TestNoIOImports: translate's own files import nothing that reads or writes files,
// processes or sockets. "net" stays allowed: translate calls net.JoinHostPort, a pure string
// function, and its transitive dependencies (the Envoy and Istio protos, url parsing) import
// "os" and "net" without doing I/O for the translator, so only its direct imports are held
// to this.
func TestNoIOImports(t *testing.T) {
	for _, pkg := range []string{module + "internal/translate", module + "internal/envoyres"} {
		deptest.Forbid(t, pkg, deptest.Imports(t, pkg),
			"os", "io/fs", "io/ioutil", "syscall", "log", "net/http", "net/rpc", "plugin")
	}
}
