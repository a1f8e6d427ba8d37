// Package discovery finds what runs in a cluster. The Source interface is what agents read.
// Dir is the universal-mode source that watches a directory of Kubernetes-shaped YAML; a
// Kubernetes informer source will implement the same interface later.
package discovery

import (
	"context"

	"github.com/meshrelay/meshrelay/internal/resource"
)

// Source reports the objects running in a cluster.
type Source interface {
	// Start blocks until ctx ends. It calls emit once with the initial full set as soon as it
	// has read it, and again with the full current set (sorted by key, deduplicated) after
	// every change. emit is never called concurrently; it should return promptly, as the
	// source does not process changes while emit runs.
	Start(ctx context.Context, emit func(objs []resource.Object)) error
}
