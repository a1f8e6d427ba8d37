package reconcile

import "sort"

// ObjectRefusal is an object of a cluster's applied output that the cluster refused while
// the rest was applied.
type ObjectRefusal struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// Refused records the objects of output version/hash that the agent of cluster reported its
// cluster refused, with the ACK of that version (none clears them). They are shown by
// Status while the acknowledged output is that hash.
func (r *Reconciler) Refused(cluster string, version uint64, hash string, refusals map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.ackLocked(cluster)
	prev := map[string]string{}
	for _, o := range a.refusals {
		prev[o.Key] = o.Reason
	}
	a.refusedHash, a.refusals = hash, nil
	for k, reason := range refusals {
		a.refusals = append(a.refusals, ObjectRefusal{Key: k, Reason: reason})
	}
	sort.Slice(a.refusals, func(i, j int) bool { return a.refusals[i].Key < a.refusals[j].Key })
	r.m.refused.WithLabelValues(cluster).Set(float64(len(a.refusals)))
	for _, o := range a.refusals {
		if prev[o.Key] != o.Reason {
			r.log.Warn("cluster refused an output object; the rest of the output is applied", "cluster", cluster, "version", version, "object", o.Key, "reason", o.Reason)
		}
	}
}
