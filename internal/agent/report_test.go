package agent

import (
	"testing"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
)

type reportFunc func() Report

func (f reportFunc) Report() Report { return f() }

func TestReportChanged(t *testing.T) {
	var cur Report
	a := &Agent{reporter: reportFunc(func() Report { return cur })}
	var sent *relayv1.AgentReport
	step := func(want bool) {
		t.Helper()
		r := a.reportChanged(sent)
		if (r != nil) != want {
			t.Fatalf("report %v sent after %v: got %v, want sent=%v", cur, sent, r, want)
		}
		if r != nil {
			sent = r
		}
	}
	step(false) // a healthy agent's first report is never sent
	cur = Report{DiscoveryError: "dir gone"}
	step(true)
	step(false) // unchanged
	cur.DataPlane = []DataPlaneProblem{{Node: "gw", TypeURL: "Listener", Error: "port in use"}}
	step(true)
	cur = Report{}
	step(true) // healthy again: the server must learn it
	step(false)

	if (&Agent{}).reportChanged(nil) != nil {
		t.Fatal("an agent without a Reporter sent a report")
	}
}
