package ui

import (
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/plane"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/relay"
)

// Each connected agent's client certificate is listed with its expiry, on whichever replica
// it is connected; one under a third of its lifetime from expiry is overdue for renewal;
// clusters with no agent connected are named.
func TestBuildAgentCertificates(t *testing.T) {
	now := time.Unix(10000, 0).UTC()
	st := configapi.ServerStatus{Status: reconcile.Status{Clusters: []reconcile.ClusterStatus{{Name: "east"}, {Name: "north"}, {Name: "west"}}}}
	st.Plane = plane.Status{Servers: []plane.Server{
		{ID: "r1", Clusters: []plane.Cluster{{Name: "east", Connection: relay.Connection{Push: 1, Pull: 1, CertificateNotAfter: now.Add(50 * time.Minute)}}}},
		{ID: "r2", Clusters: []plane.Cluster{{Name: "west", Connection: relay.Connection{Push: 1, Pull: 1, CertificateNotAfter: now.Add(10 * time.Minute)}}}},
	}}
	v := Build(Inputs{Now: now, Status: st, AgentCertTTL: time.Hour})
	got := map[string]CertView{}
	for _, c := range v.Certs {
		if c.Kind == "agent certificate" {
			got[c.Name] = c
		}
	}
	if c := got["east"]; !c.NotAfter.Equal(now.Add(50*time.Minute)) || c.State != "ok" {
		t.Errorf("east: %+v, want its expiry, ok", c)
	}
	if c := got["west"]; !c.NotAfter.Equal(now.Add(10*time.Minute)) || c.State != "soon" {
		t.Errorf("west, 10 min of 1 h left: %+v, want soon (renewal overdue)", c)
	}
	if c, ok := got["north"]; !ok || c.State != "unknown" {
		t.Errorf("north, no agent connected: %+v (listed %v), want unknown", c, ok)
	}
}
