package reconcile

import (
	"sort"
	"time"

	"github.com/meshrelay/meshrelay/internal/reconcile/safemode"
)

// SafeModeStatus says whether translation is held and why (decided by package safemode).
type SafeModeStatus = safemode.Status

// ClusterStatus is what the server knows of one registered cluster.
type ClusterStatus struct {
	Name           string  `json:"name"`
	SkipWarming    bool    `json:"skipWarming,omitempty"`
	InputVersion   uint64  `json:"inputVersion,omitempty"`
	InputHash      string  `json:"inputHash,omitempty"`
	InputResources int     `json:"inputResources"`
	OutputVersion  uint64  `json:"outputVersion,omitempty"`
	OutputHash     string  `json:"outputHash,omitempty"`
	OutputResource int     `json:"outputResources"`
	AckedVersion   uint64  `json:"ackedVersion,omitempty"`
	InSync         bool    `json:"inSync"`
	StaleSeconds   float64 `json:"staleSeconds,omitempty"`
	LastNack       string  `json:"lastNack,omitempty"`
	// EpochRefusal is set while the agent refuses this server's output for a stale epoch.
	EpochRefusal *EpochRefusal `json:"epochRefusal,omitempty"`
	// RefusedObjects are the objects of the acknowledged output the cluster refused while the
	// rest was applied.
	RefusedObjects []ObjectRefusal `json:"refusedObjects,omitempty"`
}

// Status is the reconciler's state for /status and `meshrelay check`.
type Status struct {
	Ready             bool           `json:"ready"`
	StoreError        string         `json:"storeError,omitempty"`
	SafeMode          SafeModeStatus `json:"safeMode"`
	Translations      uint64         `json:"translations"`
	LastTranslation   time.Time      `json:"lastTranslation,omitzero"`
	TranslationErrors []string       `json:"translationErrors,omitempty"`
	// ResourceStatus lists, by resource, problems such as references to things that do not
	// exist.
	ResourceStatus map[string][]string `json:"resourceStatus,omitempty"`
	// ConfigErrors are filled in by the caller from the config directory watcher.
	ConfigErrors    []string        `json:"configErrors,omitempty"`
	ConfigResources int             `json:"configResources"`
	Clusters        []ClusterStatus `json:"clusters"`
}

// Status returns a snapshot of the reconciler's state.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	config := r.config.effective()
	st := Status{
		Ready:             r.config.apiLoaded && r.store.loaded && (!r.cfg.WaitForConfigDir || r.config.dirLoaded),
		StoreError:        r.store.storeErr,
		SafeMode:          r.safe.Status,
		Translations:      r.translations,
		LastTranslation:   r.lastRun,
		TranslationErrors: r.lastErrors,
		ResourceStatus:    r.lastStatus,
		ConfigResources:   len(config),
	}
	if r.config.apiLost && st.StoreError == "" {
		st.StoreError = "the store lost applied configuration that this server holds; translating with this server's copy until the leader restores it"
	}
	for name, kc := range r.config.registered() {
		cs := ClusterStatus{Name: name, SkipWarming: kc.Spec.SkipWarming}
		if in := r.store.inputs[name]; in != nil {
			cs.InputVersion, cs.InputHash, cs.InputResources = in.Version, in.Hash, in.Len()
		}
		if out := r.store.outputs[name]; out != nil {
			cs.OutputVersion, cs.OutputHash, cs.OutputResource = out.Version, out.Hash, out.Len()
		}
		r.acks.clusterStatusLocked(&cs, now)
		st.Clusters = append(st.Clusters, cs)
	}
	sort.Slice(st.Clusters, func(i, j int) bool { return st.Clusters[i].Name < st.Clusters[j].Name })
	return st
}
