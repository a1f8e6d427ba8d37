package memstore_test

import (
	"testing"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/snapshottest"
)

func TestConformance(t *testing.T) {
	snapshottest.Run(t, func(*testing.T) snapshot.Store { return memstore.New() })
}
