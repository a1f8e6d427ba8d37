package v1alpha1

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration written in YAML and JSON as a Go duration string: "1s",
// "250ms", "1.5s", "2m". It marshals back as d.String() ("2m" becomes "2m0s"). The zero
// Duration means "unset" and is omitted by the `omitzero` tag; the validator rejects zero and
// negative durations that are written out, so a decoded, validated resource only holds
// positive or unset durations.
//
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:Pattern=`^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+$`
type Duration struct {
	// Duration is the parsed value.
	time.Duration
}

// ParseDuration parses a Go duration string ("1s", "250ms", "1.5s", "2m") into a Duration.
func ParseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return Duration{}, fmt.Errorf("%q is not a duration: use a number with a unit, such as \"1s\", \"250ms\", \"1.5s\" or \"2m\"", s)
	}
	return Duration{d}, nil
}

// MarshalJSON writes the duration as its String form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a Go duration string; null leaves d unchanged. It checks the syntax
// only: whether the value must be positive is the validator's call.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s is not a duration: use a string such as \"1s\", \"250ms\", \"1.5s\" or \"2m\"", b)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}
