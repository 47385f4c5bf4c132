// Package clock is how Castellan's packages tell the time: every
// time-based component takes a Clock, production passes System (or leaves
// the Clock nil, which OrSystem turns into System), and tests pass
// clocktest's manual clock, which moves only when told to, so that expiry,
// rotation and refill are tested without sleeping.
package clock

import "time"

// Clock tells the time and makes timers. Production code uses System; tests
// use a fake that advances only when told to, so nothing sleeps.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives the time once d has elapsed.
	After(d time.Duration) <-chan time.Time
}

// System is the wall clock.
type System struct{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (System) After(d time.Duration) <-chan time.Time { return time.After(d) }

// OrSystem returns c, or System when c is nil: a Config's Clock left nil
// means the wall clock.
func OrSystem(c Clock) Clock {
	if c == nil {
		return System{}
	}
	return c
}

// Frozen is a clock that always reads the same instant, for work that must
// see one time throughout (everything one journal transaction does is
// dated by the transaction's time). Its timers fire at once: no time
// passes on it.
type Frozen time.Time

// Now returns the frozen instant.
func (f Frozen) Now() time.Time { return time.Time(f) }

// After returns a channel that already holds the frozen instant.
func (f Frozen) After(time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- time.Time(f)
	return ch
}
