package agent

import (
	"fmt"
	"testing"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// The reach /status shows follows the input: computed again when the input's content
// changes, and the same as computing it afresh.
func TestReachCacheFollowsInput(t *testing.T) {
	svc := func(name, addr string) snapshot.Resource {
		return snapshot.NewResource("Service/gloo-system/"+name, fmt.Appendf(nil,
			`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":"gloo-system","annotations":{%q:%q}},"spec":{"ports":[{"name":"tls","port":15443}]}}`,
			name, v1alpha1.AnnotationFailoverAddress, addr))
	}
	one := snapshot.New(1, 0, []snapshot.Resource{svc("failover", "10.0.0.1")})
	moved := snapshot.New(2, 0, []snapshot.Resource{svc("failover", "10.0.0.2")})
	two := snapshot.New(3, 0, []snapshot.Resource{svc("failover", "10.0.0.2"), svc("other", "10.0.0.3")})
	var c reachCache
	for i, in := range []*snapshot.Snapshot{nil, one, one.WithVersion(7, 0), moved, two, one, nil} {
		got, want := c.of(in), externalReach(in)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("step %d: reach %+v, computed afresh %+v", i, got, want)
		}
		if in != nil && len(want) == 0 {
			t.Fatalf("step %d: the test input exposes nothing", i)
		}
	}
}
