package lifetime

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

const def, maxTTL = time.Hour, 24 * time.Hour

func policy(t *testing.T) Policy {
	t.Helper()
	p, err := New(def, maxTTL)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		def, max time.Duration
		refused  string
	}{
		{time.Hour, 24 * time.Hour, ""},
		{time.Hour, time.Hour, ""},
		{2 * time.Hour, time.Hour, "default TTL 2h0m0s exceeds max TTL 1h0m0s"},
		{0, time.Hour, "must be positive"},
		{time.Hour, 0, "must be positive"},
		{-time.Hour, time.Hour, "must be positive"},
	} {
		p, err := New(tc.def, tc.max)
		if tc.refused == "" {
			if err != nil || p.Default() != tc.def || p.Max() != tc.max {
				t.Errorf("New(%s, %s) = %+v, %v", tc.def, tc.max, p, err)
			}
		} else if err == nil || !strings.Contains(err.Error(), tc.refused) {
			t.Errorf("New(%s, %s): %v, want %q", tc.def, tc.max, err, tc.refused)
		}
	}
}

func TestSeconds(t *testing.T) {
	for _, tc := range []struct {
		secs int64
		max  time.Duration
		want time.Duration
		kind error
	}{
		{0, maxTTL, 0, nil},
		{600, maxTTL, 10 * time.Minute, nil},
		{86400, maxTTL, maxTTL, nil},
		{86401, maxTTL, 0, ErrTooLong},
		{-1, maxTTL, 0, ErrNegative},
		{math.MinInt64, maxTTL, 0, ErrNegative},
		{1 << 62, maxTTL, 0, ErrTooLong},
		{math.MaxInt64, 0, 0, ErrTooLong}, // no bound, but no overflow either
		{1 << 40, 0, 0, ErrTooLong},
		{1 << 30, 0, time.Duration(1<<30) * time.Second, nil},
	} {
		got, err := Seconds(tc.secs, tc.max)
		if got != tc.want || !errors.Is(err, tc.kind) || (tc.kind == nil) != (err == nil) {
			t.Errorf("Seconds(%d, %s) = %s, %v; want %s, %v", tc.secs, tc.max, got, err, tc.want, tc.kind)
		}
		if got < 0 {
			t.Errorf("Seconds(%d) overflowed to %s", tc.secs, got)
		}
	}
}

func TestForEntryIsTheCeiling(t *testing.T) {
	p := policy(t)
	for _, tc := range []struct {
		name             string
		requested, entry time.Duration
		want             time.Duration
		kind             error
		says             string
	}{
		{"none asked, entry TTL", 0, 10 * time.Minute, 10 * time.Minute, nil, ""},
		{"none asked, no entry TTL: CA default", 0, 0, def, nil, ""},
		{"below the entry TTL", 5 * time.Minute, 10 * time.Minute, 5 * time.Minute, nil, ""},
		{"exactly the entry TTL", 10 * time.Minute, 10 * time.Minute, 10 * time.Minute, nil, ""},
		{"one second above the entry TTL", 10*time.Minute + time.Second, 10 * time.Minute, 0, ErrTooLong, "10m0s, the TTL of registration entry e1"},
		{"the CA max above the entry TTL", maxTTL, 10 * time.Minute, 0, ErrTooLong, "request at most 10m0s"},
		{"no entry TTL: up to the CA max", maxTTL, 0, maxTTL, nil, ""},
		{"no entry TTL above the CA max", maxTTL + time.Second, 0, 0, ErrTooLong, "exceeds the maximum 24h0m0s"},
		{"entry TTL above a lowered CA max: the max is the ceiling", 0, 48 * time.Hour, maxTTL, nil, ""},
		{"entry TTL above a lowered CA max, asked above the max", maxTTL + time.Second, 48 * time.Hour, 0, ErrTooLong, "exceeds the maximum"},
		{"negative", -time.Second, 0, 0, ErrNegative, "use 0 for the default"},
		{"negative entry TTL is no TTL", 0, -time.Hour, def, nil, ""},
	} {
		got, err := p.For(tc.requested, tc.entry, "e1")
		if got != tc.want || !errors.Is(err, tc.kind) || (tc.kind == nil) != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %s, %v; want %s, %v saying %q", tc.name, got, err, tc.want, tc.kind, tc.says)
		}
	}
}

func TestRefusalsReadAsTheyDid(t *testing.T) {
	_, err := policy(t).Request(86401)
	if err == nil || err.Error() != "requested TTL 86401s exceeds the maximum 24h0m0s" {
		t.Errorf("Request(86401): %v", err)
	}
}

func TestNotAfterNeverPastTheSigner(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	signer := now.Add(2 * time.Hour)
	for _, tc := range []struct {
		ttl  time.Duration
		want time.Time
	}{
		{time.Hour, now.Add(time.Hour)},
		{2 * time.Hour, signer},
		{3 * time.Hour, signer},
		{math.MaxInt64, signer}, // now+ttl saturates, still capped
	} {
		if got := NotAfter(now, tc.ttl, signer); !got.Equal(tc.want) {
			t.Errorf("NotAfter(now, %s) = %s, want %s", tc.ttl, got, tc.want)
		}
	}
}
