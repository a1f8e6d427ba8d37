package reconcile

import (
	"bytes"
	"slices"

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
	// registered caches the registered clusters; nil when the configuration changed.
	registered map[string]bool
	// changed, when set, is called (with the reconciler's lock held) after either part of
	// the configuration was replaced.
	changed func()
}

// sameObjects reports whether two configurations sorted by key (effective) hold the same
// objects with the same content.
func sameObjects(a, b []resource.Object) bool {
	return slices.EqualFunc(a, b, func(x, y resource.Object) bool { return x.Key() == y.Key() && bytes.Equal(x.Raw, y.Raw) })
}

// effective returns the config directory's objects overridden by API-applied ones of the
// same key, sorted by key.
func (c *configSet) effective() []resource.Object {
	all := make([]resource.Object, 0, len(c.dir)+len(c.api))
	all = append(all, c.dir...)
	all = append(all, c.api...)
	return resource.Dedupe(all)
}

// isRegistered reports whether a KubernetesCluster of that name exists.
func (c *configSet) isRegistered(cluster string) bool {
	if c.registered == nil {
		c.registered = map[string]bool{}
		for name := range translate.Clusters(c.effective()) {
			c.registered[name] = true
		}
	}
	return c.registered[cluster]
}

func (c *configSet) setDir(objs []resource.Object) {
	c.dir, c.dirLoaded = objs, true
	c.registered = nil
	if c.changed != nil {
		c.changed()
	}
}

func (c *configSet) setAPI(objs []resource.Object, rev uint64, broken []string) {
	c.api, c.apiRev, c.apiLoaded, c.apiBroken = objs, rev, true, broken
	c.registered = nil
	if c.changed != nil {
		c.changed()
	}
}
