// Package clocktest provides a manual clock.Clock for tests that must not
// sleep.
package clocktest

import (
	"context"
	"sync"
	"time"
)

// Clock is a manual clock: time moves only when Advance or Set is called,
// and timers made with After fire when the clock passes their deadline. It
// is safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []timer
	changed chan struct{} // closed and replaced whenever timers change
}

type timer struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a clock that reads now.
func NewClock(now time.Time) *Clock {
	return &Clock{now: now, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the clock's time once it has been
// advanced by at least d.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, timer{at: c.now.Add(d), ch: ch})
	c.notify()
	return ch
}

// Advance moves the clock forward by d and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves the clock to t (never backwards) and fires the timers that are
// due.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at.After(c.now) {
			kept = append(kept, tm)
			continue
		}
		tm.ch <- c.now
	}
	c.timers = kept
	c.notify()
}

// Next returns the earliest pending timer deadline, and false if none is
// pending.
func (c *Clock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, tm := range c.timers {
		if next.IsZero() || tm.at.Before(next) {
			next = tm.at
		}
	}
	return next, !next.IsZero()
}

// WaitFor blocks until cond (called with the pending deadlines) returns
// true or ctx is done, and reports whether cond became true. Tests use it to
// wait until the code under test has armed a timer, without sleeping.
func (c *Clock) WaitFor(ctx context.Context, cond func(pending []time.Time) bool) bool {
	for {
		c.mu.Lock()
		pending := make([]time.Time, len(c.timers))
		for i, tm := range c.timers {
			pending[i] = tm.at
		}
		changed := c.changed
		c.mu.Unlock()
		if cond(pending) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

func (c *Clock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Func is a clock.Clock that reads the time from a test's own function
// (a closure over an atomic, a table's instant), for tests that move time
// by hand without timers. Only Now may be used: After panics, because a
// timer on the wall clock would not follow the function; a test that
// needs timers passes a *Clock.
type Func func() time.Time

// Now returns f().
func (f Func) Now() time.Time { return f() }

// After panics: a Func cannot make timers (use Clock).
func (Func) After(time.Duration) <-chan time.Time {
	panic("clocktest.Func cannot make timers: pass a *clocktest.Clock")
}
