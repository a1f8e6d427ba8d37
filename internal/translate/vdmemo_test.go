package translate

import (
	"reflect"
	"testing"
)

// TestSameServiceEntryCoversEveryField: buildServiceEntry reuses the previous memo key of
// the other clusters' part of a ServiceEntry when sameServiceEntry says it is unchanged, so
// sameServiceEntry must tell apart entries that differ in any field (the memo would
// otherwise hand out a stale resource), and accept equal ones built anew (TLS settings
// are other pointers each translation).
func TestSameServiceEntryCoversEveryField(t *testing.T) {
	base := reflect.New(reflect.TypeFor[ServiceEntryPlan]()).Elem()
	fill(t, base, 0)
	a := base.Interface().(ServiceEntryPlan)
	copyOf := func() ServiceEntryPlan {
		c := reflect.New(reflect.TypeFor[ServiceEntryPlan]()).Elem()
		fill(t, c, 0)
		return c.Interface().(ServiceEntryPlan)
	}
	if b := copyOf(); b.Endpoints[0].TLS == a.Endpoints[0].TLS || !sameServiceEntry(a, b) {
		t.Fatal("an equal entry with TLS settings at other addresses is not the same")
	}
	n := 0
	leaves(base, "ServiceEntryPlan", func(path string, _ reflect.Value) {
		n++
		c := reflect.New(reflect.TypeFor[ServiceEntryPlan]()).Elem()
		fill(t, c, 0)
		var target reflect.Value
		leaves(c, "ServiceEntryPlan", func(p string, l reflect.Value) {
			if p == path {
				target = l
			}
		})
		old := target.Interface()
		fill(t, target, 17)
		if reflect.DeepEqual(old, target.Interface()) {
			fill(t, target, 18)
		}
		if sameServiceEntry(a, c.Interface().(ServiceEntryPlan)) {
			t.Errorf("changing %s leaves the entry the same", path)
		}
	})
	if n < 10 {
		t.Fatalf("only %d fields visited", n)
	}
}

// TestBuildServiceEntryReusesOthersKey: a ServiceEntry built again with the same other
// clusters' endpoints takes the previous key of that part, which is the key hashing it
// gives; other endpoints of the others part get a key of their own.
func TestBuildServiceEntryReusesOthersKey(t *testing.T) {
	tls := func() *UpstreamTLS { return &UpstreamTLS{SNI: "default-web-8080", CertSecret: "cert", CASecret: "ca"} }
	entry := func(own, remote string) ServiceEntryPlan {
		return ServiceEntryPlan{Name: "vd-web", Namespace: "default", Hosts: []string{"web.global"}, Ports: []ServicePort{{Number: 80, Name: "http-80", Protocol: "HTTP"}}, SplitOwn: true,
			Endpoints: []Endpoint{
				{Address: own, Port: 8080, Cluster: "c1"},
				{Address: remote, Port: 15443, Cluster: "c2", TLS: tls()},
				{Address: "10.3.255.1", Port: 15443, Cluster: "c3", TLS: tls()},
			}}
	}
	first := buildServiceEntry("c1", entry("10.1.0.1", "10.2.255.1"), nil)
	if want := "se|" + planHash(first.others); first.othersKey != want {
		t.Fatalf("others key %q, want its hash %q", first.othersKey, want)
	}
	if got := len(first.others.Endpoints); got != 2 || len(first.own.Endpoints) != 1 {
		t.Fatalf("split into %d others and %d own endpoints, want 2 and 1", got, len(first.own.Endpoints))
	}
	for _, tc := range []struct {
		name        string
		own, remote string
		reused      bool
	}{
		{"own endpoint moved", "10.1.0.2", "10.2.255.1", true},
		{"other cluster's gateway moved", "10.1.0.1", "10.2.255.2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := *first
			prev.othersKey = "se|previous" // tells a reused key apart
			b := buildServiceEntry("c1", entry(tc.own, tc.remote), &prev)
			if reused := b.othersKey == prev.othersKey; reused != tc.reused {
				t.Errorf("others key %q reused: %t, want %t", b.othersKey, reused, tc.reused)
			}
			if want := "se|" + planHash(b.others); tc.reused && want != first.othersKey {
				t.Errorf("reused the others key, but the others part hashes to %q, not %q", want, first.othersKey)
			}
			if fresh := buildServiceEntry("c1", entry(tc.own, tc.remote), nil); !tc.reused && b.othersKey != fresh.othersKey {
				t.Errorf("others key %q, want %q as built without a previous entry", b.othersKey, fresh.othersKey)
			}
			if want := "se|" + planHash(b.own); b.ownKey != want {
				t.Errorf("own key %q, want %q", b.ownKey, want)
			}
		})
	}
}
