package agent

import (
	"errors"
	"sort"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
)

// objectRefusals is a Sink error saying that the output was applied except for some objects
// the cluster refused (sink.RefusedError).
type objectRefusals interface {
	error
	// ObjectRefusals returns output key → reason of every refused object.
	ObjectRefusals() map[string]string
}

// ObjectRefusal is an object of the applied output that the cluster refused.
type ObjectRefusal struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// partialApply reports whether err is exactly a sink's "applied except these objects" (and
// not that joined with another failure), and returns the refusals sorted by key.
func partialApply(err error) ([]ObjectRefusal, bool) {
	var p objectRefusals
	if !errors.As(err, &p) || error(p) != err {
		return nil, false
	}
	var out []ObjectRefusal
	for k, r := range p.ObjectRefusals() {
		out = append(out, ObjectRefusal{Key: k, Reason: r})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, true
}

// setRefusals records the refusals of the applied output version.
func (a *Agent) setRefusals(version uint64, rs []ObjectRefusal) {
	a.mu.Lock()
	a.refusals = rs
	a.mu.Unlock()
	a.m.objRefused.Set(float64(len(rs)))
	for _, r := range rs {
		a.log.Warn("output object refused by the cluster; the rest of the output is applied", "version", version, "object", r.Key, "reason", r.Reason)
	}
}

func refusalsProto(rs []ObjectRefusal) []*relayv1.ObjectRefusal {
	out := make([]*relayv1.ObjectRefusal, len(rs))
	for i, r := range rs {
		out[i] = &relayv1.ObjectRefusal{Key: r.Key, Reason: r.Reason}
	}
	return out
}
