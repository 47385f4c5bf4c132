package clock

import (
	"testing"
	"time"
)

type fixed time.Time

func (f fixed) Now() time.Time                     { return time.Time(f) }
func (fixed) After(time.Duration) <-chan time.Time { return nil }

func TestOrSystemKeepsAClockAndMakesNilTheWallClock(t *testing.T) {
	at := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := OrSystem(fixed(at)).Now(); !got.Equal(at) {
		t.Fatalf("OrSystem replaced a clock: Now = %v", got)
	}
	if _, ok := OrSystem(nil).(System); !ok {
		t.Fatalf("OrSystem(nil) = %T, want System", OrSystem(nil))
	}
}

func TestSystemIsTheWallClock(t *testing.T) {
	before := time.Now()
	now := System{}.Now()
	if now.Before(before) || now.After(time.Now()) {
		t.Fatalf("System.Now = %v, not between %v and now", now, before)
	}
	select {
	case <-System{}.After(time.Millisecond):
	case <-time.After(10 * time.Second):
		t.Fatal("System.After(1ms) did not fire within 10s")
	}
}

func TestFrozenReadsOneInstantAndFiresAtOnce(t *testing.T) {
	at := time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)
	f := Frozen(at)
	for range 3 {
		if got := f.Now(); !got.Equal(at) {
			t.Fatalf("Now = %s, want %s every time", got, at)
		}
	}
	select {
	case got := <-f.After(time.Hour):
		if !got.Equal(at) {
			t.Fatalf("After delivered %s, want %s", got, at)
		}
	default:
		t.Fatal("a timer on a frozen clock did not fire at once")
	}
}
