package rotate

import (
	"testing"
	"time"
)

func TestRenewAtIsHalfLifeMinusJitter(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(time.Hour)
	tests := []struct {
		name string
		rand float64
		want time.Time
	}{
		{"no jitter", 0, nb.Add(30 * time.Minute)},
		{"half jitter", 0.5, nb.Add(30*time.Minute - 3*time.Minute)},
		{"almost full jitter", 0.999, nb.Add(30*time.Minute - time.Duration(0.999*0.1*float64(time.Hour)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Policy{Rand: func() float64 { return tt.rand }}
			if got := p.RenewAt(time.Time{}, nb, na); !got.Equal(tt.want) {
				t.Fatalf("RenewAt = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRenewAtNeverBeforeTwoFifthsOfLifetime(t *testing.T) {
	nb := time.Unix(1000, 0)
	for i := range 100 {
		r := float64(i) / 100
		p := Policy{Rand: func() float64 { return r }}
		got := p.RenewAt(nb.Add(-time.Minute), nb, nb.Add(10*time.Second))
		if got.Before(nb.Add(4*time.Second)) || got.After(nb.Add(5*time.Second)) {
			t.Fatalf("rand %v: RenewAt = +%v, want within [4s, 5s]", r, got.Sub(nb))
		}
	}
}

func TestRenewAtDegenerateLifetime(t *testing.T) {
	nb := time.Unix(1000, 0)
	if got := (Policy{}).RenewAt(time.Time{}, nb, nb.Add(-time.Second)); !got.Equal(nb) {
		t.Fatalf("RenewAt for inverted validity = %v, want notBefore", got)
	}
}

func TestBackoffGrowsExponentiallyAndIsCapped(t *testing.T) {
	top := Policy{Rand: func() float64 { return 0.999999 }}
	bottom := Policy{Rand: func() float64 { return 0 }}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		attempt := i + 1
		hi := top.Backoff(attempt, 0)
		lo := bottom.Backoff(attempt, 0)
		if lo != w/2 {
			t.Errorf("attempt %d: lowest delay %v, want %v", attempt, lo, w/2)
		}
		if hi > w || hi < w-time.Millisecond {
			t.Errorf("attempt %d: highest delay %v, want about %v", attempt, hi, w)
		}
	}
}

func TestBackoffCappedAtTenthOfLifetime(t *testing.T) {
	p := Policy{Rand: func() float64 { return 0.999999 }}
	if got := p.Backoff(20, 20*time.Second); got > 2*time.Second {
		t.Fatalf("Backoff for a 20s SVID = %v, want at most 2s", got)
	}
	// The cap never drops below the base delay.
	if got := p.Backoff(20, time.Second); got > time.Second {
		t.Fatalf("Backoff for a 1s SVID = %v, want at most the 1s base", got)
	}
}

func TestDueUsesBatchWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	p := Policy{BatchWindow: 2 * time.Second}
	if !p.Due(now, now.Add(-time.Hour)) || !p.Due(now, now.Add(2*time.Second)) {
		t.Fatal("past and in-window renewals must be due")
	}
	if p.Due(now, now.Add(2*time.Second+1)) {
		t.Fatal("renewal after the window must not be due")
	}
}

func TestRenewAtCountsFromReceiptWhenNotBeforeIsBackdated(t *testing.T) {
	received := time.Unix(1000, 0)
	nb := received.Add(-30 * time.Second) // the CA backdated by 30s
	na := received.Add(20 * time.Second)
	p := Policy{Rand: func() float64 { return 0 }}
	if got, want := p.RenewAt(received, nb, na), received.Add(10*time.Second); !got.Equal(want) {
		t.Fatalf("RenewAt = %v, want %v (half of the 20s left at receipt)", got, want)
	}
}

func TestTaintedRenewAtSpreadsOverTheWindowNeverPastThePlan(t *testing.T) {
	now := time.Unix(5000, 0)
	far := now.Add(time.Hour)
	tests := []struct {
		name    string
		p       Policy
		planned time.Time
		want    time.Time
	}{
		{"start of the default window", Policy{Rand: func() float64 { return 0 }}, far, now},
		{"middle of the default window", Policy{Rand: func() float64 { return 0.5 }}, far, now.Add(15 * time.Second)},
		{"end of a configured window", Policy{TaintWindow: 10 * time.Second, Rand: func() float64 { return 0.999 }}, far,
			now.Add(time.Duration(0.999 * float64(10*time.Second)))},
		{"planned renewal comes first", Policy{Rand: func() float64 { return 0.9 }}, now.Add(2 * time.Second), now.Add(2 * time.Second)},
		{"overdue plan stays overdue", Policy{Rand: func() float64 { return 0.5 }}, now.Add(-time.Second), now.Add(-time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.TaintedRenewAt(now, tt.planned); !got.Equal(tt.want) {
				t.Fatalf("TaintedRenewAt = %v, want %v", got.Sub(now), tt.want.Sub(now))
			}
		})
	}
}

func TestTaintedRenewAtUsesTheRandomSource(t *testing.T) {
	now := time.Unix(5000, 0)
	seen := map[time.Time]bool{}
	for range 50 {
		at := Policy{}.TaintedRenewAt(now, now.Add(time.Hour))
		if at.Before(now) || !at.Before(now.Add(30*time.Second)) {
			t.Fatalf("TaintedRenewAt = +%v, want within [0, 30s)", at.Sub(now))
		}
		seen[at] = true
	}
	if len(seen) < 40 {
		t.Fatalf("only %d distinct times in 50 draws: the window is not spread", len(seen))
	}
}

func TestBatchSizeDefaultsAndOverrides(t *testing.T) {
	for _, c := range []struct{ max, want int }{{0, DefaultMaxBatch}, {-3, DefaultMaxBatch}, {1, 1}, {500, 500}} {
		if got := (Policy{MaxBatch: c.max}).BatchSize(); got != c.want {
			t.Errorf("MaxBatch %d: BatchSize %d, want %d", c.max, got, c.want)
		}
	}
}
