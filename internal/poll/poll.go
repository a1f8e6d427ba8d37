// Package poll waits in tests for a condition that becomes true asynchronously.
package poll

import (
	"errors"
	"testing"
	"time"
)

// Interval is how often Eventually polls.
const Interval = 50 * time.Millisecond

// Eventually calls f every interval until it returns nil, and fails the test with what and
// f's last error once timeout has passed or the test's context ends.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	Every(t, timeout, Interval, what, f)
}

// Every is Eventually with a chosen poll interval (for polls that are heavy or fast).
func Every(t testing.TB, timeout, interval time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %s: %v", what, timeout, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-time.After(interval):
		}
	}
}

// Until is Eventually for a condition that reports only true or false.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errFalse
	})
}

var errFalse = errors.New("condition false")
