package translate

import (
	"reflect"
	"testing"
	"time"
)

// fill sets every settable leaf of v to a value derived from seed, allocating pointers,
// slices (two elements) and maps (one entry) on the way, so that every field a plan type
// has — including fields added later — holds something.
func fill(t *testing.T, v reflect.Value, seed int) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+seed%26)))
	case reflect.Bool:
		v.SetBool(seed%2 == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(seed + 1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(seed + 1))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(seed) + 0.5)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), seed+1)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(t, v.Index(i), seed+i+1)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(t, k, seed+1)
		fill(t, e, seed+2)
		v.SetMapIndex(k, e)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(t, v.Field(i), seed+i)
			}
		}
	default:
		t.Fatalf("plan field of kind %s cannot be filled (and planHash cannot key it)", v.Kind())
	}
}

// leaves calls f with every exported leaf field reachable from v (through pointers, first
// elements; maps as a whole), by path.
func leaves(v reflect.Value, path string, f func(path string, leaf reflect.Value)) {
	switch v.Kind() {
	case reflect.Pointer:
		leaves(v.Elem(), path, f)
	case reflect.Slice:
		leaves(v.Index(0), path+"[0]", f)
	case reflect.Map:
		f(path+"{}", v) // map entries are not addressable: the map is replaced whole
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				leaves(v.Field(i), path+"."+v.Type().Field(i).Name, f)
			}
		}
	default:
		f(path, v)
	}
}

// TestPlanHashCoversEveryField changes each leaf of each memoized plan element in turn
// and checks that the memo key changes: a field the key missed would make the memo hand
// out stale resources.
func TestPlanHashCoversEveryField(t *testing.T) {
	for _, typ := range []reflect.Type{
		reflect.TypeFor[UpstreamPlan](), reflect.TypeFor[HTTPListener](), reflect.TypeFor[TCPGateway](),
		reflect.TypeFor[SecretPlan](), reflect.TypeFor[ServiceEntryPlan](), reflect.TypeFor[VirtualHost](),
	} {
		t.Run(typ.Name(), func(t *testing.T) {
			base := reflect.New(typ).Elem()
			fill(t, base, 0)
			key := planHash(base.Interface())
			if key == "" {
				t.Fatal("no key")
			}
			if again := planHash(base.Interface()); again != key {
				t.Fatal("key not stable")
			}
			n := 0
			leaves(base, typ.Name(), func(path string, leaf reflect.Value) {
				n++
				c := reflect.New(typ).Elem()
				fill(t, c, 0)
				// Find the same leaf in the copy by walking it the same way.
				var target reflect.Value
				leaves(c, typ.Name(), func(p string, l reflect.Value) {
					if p == path {
						target = l
					}
				})
				if !target.CanSet() {
					t.Fatalf("%s cannot be set", path)
				}
				old := target.Interface()
				fill(t, target, 17)
				if reflect.DeepEqual(old, target.Interface()) {
					fill(t, target, 18)
				}
				if planHash(c.Interface()) == key {
					t.Errorf("changing %s does not change the memo key", path)
				}
			})
			if n < 2 {
				t.Fatalf("only %d fields visited", n)
			}
		})
	}
}

func TestPlanHashTellsApartAdjacentValues(t *testing.T) {
	type pair struct{ A, B string }
	if planHash(pair{"ab", "c"}) == planHash(pair{"a", "bc"}) {
		t.Error(`("ab","c") and ("a","bc") share a key`)
	}
	if planHash([]string{"a", "b"}) == planHash([]string{"ab"}) {
		t.Error(`["a","b"] and ["ab"] share a key`)
	}
	if planHash(map[string]int{"a": 1, "b": 2}) != planHash(map[string]int{"b": 2, "a": 1}) {
		t.Error("map key order changes the key")
	}
	if planHash(time.Second) == planHash(2*time.Second) {
		t.Error("durations share a key")
	}
	if planHash(struct{ F func() }{}) != "" {
		t.Error("a func field was keyed")
	}
}
