package translate_test

import (
	"context"
	"maps"
	"testing"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// TestParseDecodesOnlyChangedInputs: a cluster whose input changed decodes again only the
// resources whose key or hash changed and reuses the others from its previous parse. In
// ptModel's world, each change to c2's input is translated incrementally, then reverted;
// both translations must decode exactly the resources the change touched, reuse the rest of
// c2's input, parse no other cluster, and equal a fresh translation.
func TestParseDecodesOnlyChangedInputs(t *testing.T) {
	m := ptNewModel()
	m.vd = true
	m.secret[1] = true // a Secret and an Upstream in c2's input too
	m.ipatch[1] = true
	base := m.input(t)
	m.svcs[1]["web"] = []string{"10.2.0.7"}
	moved := m.input(t).Inputs["c2"]

	const (
		webSvc    = "Service/default/web"
		webSlice  = "EndpointSlice/default/web-1"
		apiSvc    = "Service/default/api"
		apiSlice  = "EndpointSlice/default/api-1"
		secretKey = "Secret/gloo-system/" + translate.FailoverUpstreamSecret
	)
	c2 := base.Inputs["c2"]
	for _, k := range []string{webSvc, webSlice, apiSvc, apiSlice, secretKey} {
		if _, ok := c2.Resources[k]; !ok {
			t.Fatalf("c2's input has no %s; it has %v", k, c2.Keys())
		}
	}
	renamed := ptInput(t, nil, map[string][]string{"c2": {ptService("default", "api2", 8080)}}).Inputs["c2"].Resources["Service/default/api2"]
	for _, tc := range []struct {
		name string
		edit func(rs map[string]snapshot.Resource)
		// resources decoded by the change, and by its revert
		decoded, reverted int
		fails             bool // the change makes c2's input report an error
	}{
		{name: "one EndpointSlice changed", edit: func(rs map[string]snapshot.Resource) { rs[webSlice] = moved.Resources[webSlice] },
			decoded: 1, reverted: 1},
		{name: "EndpointSlice removed", edit: func(rs map[string]snapshot.Resource) { delete(rs, webSlice) },
			decoded: 0, reverted: 1},
		{name: "Secret removed", edit: func(rs map[string]snapshot.Resource) { delete(rs, secretKey) },
			decoded: 0, reverted: 1},
		{name: "Service renamed", edit: func(rs map[string]snapshot.Resource) { delete(rs, apiSvc); rs[renamed.Key] = renamed },
			decoded: 1, reverted: 1},
		{name: "kind changes under the same key", edit: func(rs map[string]snapshot.Resource) {
			rs[webSvc] = snapshot.NewResource(webSvc, rs[webSlice].Body) // an EndpointSlice now
		}, decoded: 1, reverted: 1},
		{name: "body no longer decodes", edit: func(rs map[string]snapshot.Resource) {
			rs[apiSlice] = snapshot.NewResource(apiSlice, []byte(`{"kind":["EndpointSlice"]}`))
		}, decoded: 1, reverted: 1, fails: true},
		{name: "Secret no longer decodes as a Secret", edit: func(rs map[string]snapshot.Resource) {
			rs[secretKey] = snapshot.NewResource(secretKey, []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"},"data":7}`))
		}, decoded: 1, reverted: 1, fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := maps.Clone(c2.Resources)
			tc.edit(rs)
			edited := translate.Input{Config: base.Config, Certs: base.Certs, Inputs: maps.Clone(base.Inputs)}
			edited.Inputs["c2"] = snapshot.FromMap(2, 0, rs)

			tr := translate.NewTranslator()
			first := tr.Translate(base)
			if len(first.Errors) != 0 {
				t.Fatalf("base input reports errors: %q", first.Errors)
			}
			if n := totalResources(base); first.Work.InputsDecoded != n || first.Work.InputsReused != 0 {
				t.Fatalf("first translation decoded %d and reused %d input resources, want %d and 0", first.Work.InputsDecoded, first.Work.InputsReused, n)
			}
			for _, step := range []struct {
				name    string
				in      translate.Input
				decoded int
			}{{"change", edited, tc.decoded}, {"revert", base, tc.reverted}} {
				res := tr.Translate(step.in)
				n := step.in.Inputs["c2"].Len()
				if step.name == "revert" {
					// The input of the translation before is still parsed whole (the
					// Translator keeps the models the last translation replaced).
					if got := res.Work; got.InputsParsed != 0 || got.InputsDecoded != 0 || got.InputsReused != 0 {
						t.Errorf("revert: parsed %d inputs, decoded %d and reused %d input resources, want none", got.InputsParsed, got.InputsDecoded, got.InputsReused)
					}
				} else if got := res.Work; got.InputsDecoded != step.decoded || got.InputsReused != n-step.decoded {
					t.Errorf("%s: decoded %d and reused %d input resources, want %d and %d (only c2's, of %d)", step.name, got.InputsDecoded, got.InputsReused, step.decoded, n-step.decoded, n)
				}
				if d := ptDiff(translate.Translate(step.in), res); d != "" {
					t.Errorf("%s: incremental differs from fresh: %s", step.name, d)
				}
				if fails := step.name == "change" && tc.fails; fails != (len(res.Errors) > 0) {
					t.Errorf("%s: errors %q, want some: %t", step.name, res.Errors, fails)
				}
			}
		})
	}
}

func totalResources(in translate.Input) int {
	n := 0
	for _, s := range in.Inputs {
		n += s.Len()
	}
	return n
}

// TestAbandonedTranslationKeepsDecodedInputsConsistent: a translation abandoned after
// parsing leaves parsed inputs that the next translations reuse, of the abandoned input or
// of the one before, with outputs equal to a fresh translation.
func TestAbandonedTranslationKeepsDecodedInputsConsistent(t *testing.T) {
	m := ptNewModel()
	m.vd = true
	base := m.input(t)
	m.svcs[1]["web"] = []string{"10.2.0.7"}
	moved := m.input(t)

	tr := translate.NewTranslator()
	tr.Translate(base)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.TranslateContext(ctx, moved); err == nil {
		t.Fatal("a translation with an ended context was not abandoned")
	}
	for _, step := range []struct {
		name    string
		in      translate.Input
		decoded int
	}{
		// Each was parsed before: the abandoned translation parsed moved, and the
		// Translator keeps the models a translation replaced for one more.
		{"the abandoned input", moved, 0},
		{"the input before", base, 0},
		{"the abandoned input again", moved, 0},
	} {
		res := tr.Translate(step.in)
		if res.Work.InputsDecoded != step.decoded {
			t.Errorf("%s: decoded %d input resources, want %d", step.name, res.Work.InputsDecoded, step.decoded)
		}
		if d := ptDiff(translate.Translate(step.in), res); d != "" {
			t.Errorf("%s: incremental differs from fresh: %s", step.name, d)
		}
	}
}
