package clocktest

import (
	"context"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"
)

var (
	_ clock.Clock = (*Clock)(nil)
	_ clock.Clock = Func(nil)
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func fired(ch <-chan time.Time) (time.Time, bool) {
	select {
	case t := <-ch:
		return t, true
	default:
		return time.Time{}, false
	}
}

func TestAfterFiresOnlyOnceTheClockPassesItsDeadline(t *testing.T) {
	c := NewClock(t0)
	ch := c.After(time.Minute)
	c.Advance(59 * time.Second)
	if _, ok := fired(ch); ok {
		t.Fatal("timer fired 1s before its deadline")
	}
	c.Advance(time.Second)
	got, ok := fired(ch)
	if !ok || !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("at the deadline: fired=%v at %v, want %v", ok, got, t0.Add(time.Minute))
	}
	if _, ok := c.Next(); ok {
		t.Fatal("a fired timer is still pending")
	}
}

func TestAfterOfNoDurationFiresAtOnce(t *testing.T) {
	c := NewClock(t0)
	for _, d := range []time.Duration{0, -time.Second} {
		if got, ok := fired(c.After(d)); !ok || !got.Equal(t0) {
			t.Fatalf("After(%v): fired=%v at %v, want now", d, ok, got)
		}
	}
}

func TestSetNeverMovesTheClockBackwards(t *testing.T) {
	c := NewClock(t0)
	c.Set(t0.Add(-time.Hour))
	if !c.Now().Equal(t0) {
		t.Fatalf("Set to the past moved the clock to %v", c.Now())
	}
	c.Set(t0.Add(time.Hour))
	if !c.Now().Equal(t0.Add(time.Hour)) {
		t.Fatalf("Set to the future: clock reads %v", c.Now())
	}
}

func TestNextIsTheEarliestPendingDeadline(t *testing.T) {
	c := NewClock(t0)
	c.After(3 * time.Second)
	c.After(time.Second)
	c.After(2 * time.Second)
	if next, ok := c.Next(); !ok || !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("Next = %v, %v; want %v", next, ok, t0.Add(time.Second))
	}
	c.Advance(time.Second)
	if next, ok := c.Next(); !ok || !next.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("after the first fired, Next = %v, %v", next, ok)
	}
}

func TestWaitForReturnsOnceAnotherGoroutineArmsATimer(t *testing.T) {
	c := NewClock(t0)
	armed := make(chan (<-chan time.Time), 1)
	go func() { armed <- c.After(time.Minute) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !c.WaitFor(ctx, func(p []time.Time) bool { return len(p) == 1 }) {
		t.Fatal("WaitFor did not see the armed timer")
	}
	ch := <-armed
	c.Advance(time.Minute)
	if _, ok := fired(ch); !ok {
		t.Fatal("the armed timer did not fire")
	}
}

func TestWaitForGivesUpWhenItsContextEnds(t *testing.T) {
	c := NewClock(t0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if c.WaitFor(ctx, func([]time.Time) bool { return false }) {
		t.Fatal("WaitFor reported a condition that never held")
	}
}

func TestFuncReadsItsFunctionAndRefusesTimers(t *testing.T) {
	f := Func(func() time.Time { return t0 })
	if !f.Now().Equal(t0) {
		t.Fatalf("Now = %v", f.Now())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("After did not panic")
		}
	}()
	f.After(time.Second)
}
