package v1alpha1_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
)

func TestDurationRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		out  string
	}{
		{`"1s"`, time.Second, `"1s"`},
		{`"250ms"`, 250 * time.Millisecond, `"250ms"`},
		{`"1.5s"`, 1500 * time.Millisecond, `"1.5s"`},
		{`"2m"`, 2 * time.Minute, `"2m0s"`},
		{`"-1s"`, -time.Second, `"-1s"`}, // syntax only: positivity is the validator's call
	} {
		var d v1alpha1.Duration
		if err := json.Unmarshal([]byte(tc.in), &d); err != nil {
			t.Fatalf("unmarshal %s: %v", tc.in, err)
		}
		if d.Duration != tc.want {
			t.Errorf("unmarshal %s = %v, want %v", tc.in, d.Duration, tc.want)
		}
		b, err := json.Marshal(d)
		if err != nil || string(b) != tc.out {
			t.Errorf("marshal %v = %s, %v; want %s", d, b, err, tc.out)
		}
		var back v1alpha1.Duration
		if err := json.Unmarshal(b, &back); err != nil || back != d {
			t.Errorf("round trip of %s gave %v, %v", tc.in, back, err)
		}
	}
}

func TestDurationInStruct(t *testing.T) {
	type s struct {
		D   v1alpha1.Duration  `json:"d,omitzero"`
		P   *v1alpha1.Duration `json:"p,omitempty"`
		Set v1alpha1.Duration  `json:"set,omitzero"`
	}
	b, err := json.Marshal(s{Set: v1alpha1.Duration{Duration: 3 * time.Second}})
	if err != nil || string(b) != `{"set":"3s"}` {
		t.Errorf("marshal = %s, %v; want unset durations omitted", b, err)
	}
	var v s
	if err := json.Unmarshal([]byte(`{"d":null,"p":"1s","set":"2s"}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.D.Duration != 0 || v.P == nil || v.P.Duration != time.Second || v.Set.Duration != 2*time.Second {
		t.Errorf("unmarshal = %+v", v)
	}
}

func TestDurationRejects(t *testing.T) {
	for _, in := range []string{`"1x"`, `"1"`, `""`, `5`, `true`, `{}`} {
		var d v1alpha1.Duration
		err := json.Unmarshal([]byte(in), &d)
		if err == nil || !strings.Contains(err.Error(), "is not a duration") {
			t.Errorf("unmarshal %s: error %v, want \"is not a duration\"", in, err)
		}
	}
	if _, err := v1alpha1.ParseDuration("1x"); err == nil || !strings.Contains(err.Error(), `"1x" is not a duration`) {
		t.Errorf("ParseDuration(1x) = %v", err)
	}
}
