package discovery

import (
	"bytes"
	"time"

	"github.com/meshrelay/meshrelay/internal/resource"
)

// Debounce coalesces bursts of change signals for a watch loop: call Changed for every
// signal, receive from C, and call Fired when it fires. C fires once the signals have been
// quiet for the delay, or at the latest ten delays after the first signal of a burst that
// keeps going. It is not safe for concurrent use (one loop owns it).
type Debounce struct {
	delay   time.Duration
	timer   *time.Timer
	pending bool
	first   time.Time
}

// NewDebounce returns a Debounce with the given delay; Stop releases its timer.
func NewDebounce(delay time.Duration) *Debounce {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Debounce{delay: delay, timer: t}
}

// C fires when a burst has settled.
func (b *Debounce) C() <-chan time.Time { return b.timer.C }

// Changed records a change signal.
func (b *Debounce) Changed() {
	if now := time.Now(); !b.pending {
		b.pending, b.first = true, now
		b.timer.Reset(b.delay)
	} else if now.Sub(b.first) < 10*b.delay {
		b.timer.Reset(b.delay) // a burst: wait for it to settle, up to a bound
	}
}

// Fired must be called after receiving from C.
func (b *Debounce) Fired() { b.pending = false }

// Stop releases the timer.
func (b *Debounce) Stop() { b.timer.Stop() }

// Equal reports whether two sorted sets of objects are the same (keys, bytes and where
// each was read).
func Equal(a, b []resource.Object) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key() != b[i].Key() || !bytes.Equal(a[i].Raw, b[i].Raw) || a[i].Source != b[i].Source {
			return false
		}
	}
	return true
}
