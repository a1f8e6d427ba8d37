package reconcile

// roles answers, for every part of the reconciler, what this server may do among its peers
// (Config.Role, nil for a single server) and passes on the epochs it witnesses.
type roles struct {
	role    Role
	witness func(epoch uint64) // Config.WitnessEpoch; may be nil
}

// active returns whether this server is active and its epoch.
func (r roles) active() (bool, uint64) {
	if r.role == nil {
		return true, 1
	}
	return r.role.Active()
}

func (r roles) leader() bool { return r.role == nil || r.role.Leader() }

func (r roles) owns(cluster string) bool {
	if r.role == nil {
		return true
	}
	return r.role.Owns(cluster)
}

// witnessLocked passes on an epoch seen outside the global lock; the reconciler's lock is
// held.
func (r roles) witnessLocked(epoch uint64) {
	if r.witness != nil && epoch > 0 {
		r.witness(epoch)
	}
}

// kicker asks the loop for a translation soon; asks made before the loop gets to it
// coalesce into one.
type kicker chan struct{}

func (k kicker) kick() {
	select {
	case k <- struct{}{}:
	default:
	}
}
