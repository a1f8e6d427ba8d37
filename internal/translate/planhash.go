package translate

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sync"
)

// planHash is the memo key of a plan element: a SHA-256 over every field it holds, walked
// by reflection so that a field added later is covered without anyone remembering to
// (CONVENTIONS habit 6). It is several times cheaper than encoding with gob, which the
// memo used first: gob sends type descriptors with every encoder.
//
// Every value is written with its kind and, for variable-length values, its length, so
// that two different values never write the same bytes ("ab","c" vs "a","bc"; nil vs
// empty is deliberately the same, as it renders the same). Maps are written in key order.
// Kinds that cannot be keyed (funcs, channels, unsafe pointers, interfaces holding them)
// make the value unkeyable: planHash then returns "" and the caller renders afresh.
func planHash(v any) string {
	b := hashBufs.Get().(*[]byte)
	buf := (*b)[:0]
	buf, ok := appendValue(buf, reflect.ValueOf(v))
	var key string
	if ok {
		sum := sha256.Sum256(buf)
		key = hex.EncodeToString(sum[:])
	}
	if cap(buf) <= 1<<20 { // do not keep huge buffers alive
		*b = buf
		hashBufs.Put(b)
	}
	return key
}

var hashBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func appendLen(buf []byte, n int) []byte { return binary.AppendUvarint(buf, uint64(n)) }

func appendValue(buf []byte, v reflect.Value) ([]byte, bool) {
	if !v.IsValid() {
		return append(buf, 0), true
	}
	buf = append(buf, byte(v.Kind()))
	if v.Type() == endpointType && v.CanInterface() {
		// Plans hold thousands of endpoints: write them without reflection. The
		// coverage test fails when Endpoint gains a field this does not write.
		return appendEndpoint(buf, v.Interface().(Endpoint)), true
	}
	switch v.Kind() {
	case reflect.Bool:
		if v.Bool() {
			return append(buf, 1), true
		}
		return append(buf, 0), true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return binary.AppendVarint(buf, v.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return binary.AppendUvarint(buf, v.Uint()), true
	case reflect.Float32, reflect.Float64:
		return binary.LittleEndian.AppendUint64(buf, math.Float64bits(v.Float())), true
	case reflect.String:
		s := v.String()
		buf = appendLen(buf, len(s))
		return append(buf, s...), true
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return append(buf, 0), true
		}
		buf = append(buf, 1)
		if v.Kind() == reflect.Interface {
			// The dynamic type matters: two types may share a representation.
			t := v.Elem().Type().String()
			buf = appendLen(buf, len(t))
			buf = append(buf, t...)
		}
		return appendValue(buf, v.Elem())
	case reflect.Slice, reflect.Array:
		n := v.Len()
		buf = appendLen(buf, n)
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return append(buf, v.Bytes()...), true
		}
		ok := true
		for i := 0; i < n && ok; i++ {
			buf, ok = appendValue(buf, v.Index(i))
		}
		return buf, ok
	case reflect.Struct:
		ok := true
		for i := 0; i < v.NumField() && ok; i++ {
			buf, ok = appendValue(buf, v.Field(i))
		}
		return buf, ok
	case reflect.Map:
		buf = appendLen(buf, v.Len())
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int {
			return compareKeys(a, b)
		})
		ok := true
		for i := 0; i < len(keys) && ok; i++ {
			if buf, ok = appendValue(buf, keys[i]); ok {
				buf, ok = appendValue(buf, v.MapIndex(keys[i]))
			}
		}
		return buf, ok
	default: // Func, Chan, UnsafePointer, Complex: nothing a plan holds
		return buf, false
	}
}

// compareKeys orders map keys of the kinds plans use (strings and integers); other kinds
// are ordered by their printed form, which is stable for value types.
func compareKeys(a, b reflect.Value) int {
	switch a.Kind() {
	case reflect.String:
		return cmpOrdered(a.String(), b.String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return cmpOrdered(a.Int(), b.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return cmpOrdered(a.Uint(), b.Uint())
	default:
		return cmpOrdered(fmt.Sprint(a.Interface()), fmt.Sprint(b.Interface()))
	}
}

func cmpOrdered[T int64 | uint64 | string](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

var endpointType = reflect.TypeFor[Endpoint]()

func appendEndpoint(buf []byte, e Endpoint) []byte {
	for _, s := range [...]string{e.Address, e.Cluster, e.Region, e.Zone, e.Network} {
		buf = appendLen(buf, len(s))
		buf = append(buf, s...)
	}
	buf = binary.AppendUvarint(buf, uint64(e.Port))
	buf = binary.AppendUvarint(buf, uint64(e.Priority))
	if e.TLS == nil {
		return append(buf, 0)
	}
	buf = append(buf, 1)
	for _, s := range [...]string{e.TLS.SNI, e.TLS.CertSecret, e.TLS.CASecret} {
		buf = appendLen(buf, len(s))
		buf = append(buf, s...)
	}
	return buf
}

// namesKey is the memo key of sets of names (without reflection: a plan may name thousands
// of upstreams): each set's size, then its names in order, each with its length.
func namesKey(sets ...map[string]bool) string {
	b := hashBufs.Get().(*[]byte)
	buf := (*b)[:0]
	for _, set := range sets {
		names := make([]string, 0, len(set))
		for n, ok := range set {
			if ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		buf = appendLen(buf, len(names))
		for _, n := range names {
			buf = appendLen(buf, len(n))
			buf = append(buf, n...)
		}
	}
	sum := sha256.Sum256(buf)
	if cap(buf) <= 1<<20 {
		*b = buf
		hashBufs.Put(b)
	}
	return "names|" + hex.EncodeToString(sum[:])
}
