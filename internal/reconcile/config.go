package reconcile

import (
	"bytes"
	"slices"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// configSet is the configuration a server translates: the config directory's (or the custom
// resources') and the one applied through the API, read from the store. The reconciler's lock
// guards it.
type configSet struct {
	dir       []resource.Object
	dirLoaded bool
	api       []resource.Object
	apiLoaded bool
	apiBroken []string // stored configuration resources that do not decode: "key: error"
	apiLost   bool     // the store lost applied configuration this server still holds
	apiRev    uint64
	// eff and clusters cache effective() and clusters(); nil when the configuration
	// changed.
	eff      []resource.Object
	clusters map[string]v1alpha1.KubernetesCluster
	// changed, when set, is called (with the reconciler's lock held) after either part of
	// the configuration was replaced.
	changed func()
}

// sameObjects reports whether two configurations sorted by key (effective) hold the same
// objects with the same content. The same slice (effective's, kept until the configuration
// changes) is not compared element by element: the loop asks on every round and, while
// input changes wait, every 20 ms, with thousands of objects.
func sameObjects(a, b []resource.Object) bool {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return true
	}
	return slices.EqualFunc(a, b, func(x, y resource.Object) bool { return x.Key() == y.Key() && bytes.Equal(x.Raw, y.Raw) })
}

// effective returns the config directory's objects overridden by API-applied ones of the
// same key, sorted by key. Callers must not modify it: it is kept until the configuration
// changes (it is asked for on every round and every /status).
func (c *configSet) effective() []resource.Object {
	if c.eff == nil {
		all := make([]resource.Object, 0, len(c.dir)+len(c.api))
		all = append(all, c.dir...)
		all = append(all, c.api...)
		c.eff = resource.Dedupe(all)
	}
	return c.eff
}

// registered returns the registered clusters (translate.Clusters of effective). Callers
// must not modify it.
func (c *configSet) registered() map[string]v1alpha1.KubernetesCluster {
	if c.clusters == nil {
		c.clusters = translate.Clusters(c.effective())
	}
	return c.clusters
}

// isRegistered reports whether a KubernetesCluster of that name exists.
func (c *configSet) isRegistered(cluster string) bool {
	_, ok := c.registered()[cluster]
	return ok
}

func (c *configSet) setDir(objs []resource.Object) {
	c.dir, c.dirLoaded = objs, true
	c.eff, c.clusters = nil, nil
	if c.changed != nil {
		c.changed()
	}
}

func (c *configSet) setAPI(objs []resource.Object, rev uint64, broken []string) {
	c.api, c.apiRev, c.apiLoaded, c.apiBroken = objs, rev, true, broken
	c.eff, c.clusters = nil, nil
	if c.changed != nil {
		c.changed()
	}
}
