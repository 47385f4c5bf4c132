package main

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSide counts the CSRs it is asked for and fails once told to.
type fakeSide struct {
	mu      sync.Mutex
	calls   int
	csrs    int
	failAt  int // the call that fails (0: none)
	maxSeen int // the largest batch seen
}

func (f *fakeSide) name() string     { return "fake" }
func (f *fakeSide) server() *process { return nil }

func (f *fakeSide) issue(_ context.Context, csrs [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.csrs += len(csrs)
	f.maxSeen = max(f.maxSeen, len(csrs))
	if f.failAt != 0 && f.calls >= f.failAt {
		return errors.New("refused")
	}
	return nil
}

// TestLoadCountsEverySVIDItAskedFor: the SVIDs a load reports are exactly
// the CSRs the side was sent, in batches of the cell's size.
func TestLoadCountsEverySVIDItAskedFor(t *testing.T) {
	csrs := make([][]byte, 120)
	f := &fakeSide{}
	r, err := load(t.Context(), f, cell{"t", 50, 3}, csrs, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.svids != f.csrs || r.svids == 0 || f.maxSeen != 50 {
		t.Fatalf("reported %d SVIDs; the side was asked for %d in batches of at most %d", r.svids, f.csrs, f.maxSeen)
	}
	if r.p50 <= 0 || r.elapsed < 50*time.Millisecond {
		t.Fatalf("p50 %s, elapsed %s", r.p50, r.elapsed)
	}
}

// TestLoadStopsOnAFailedCall: a refusal is an error, never a slower rate.
func TestLoadStopsOnAFailedCall(t *testing.T) {
	f := &fakeSide{failAt: 5}
	_, err := load(t.Context(), f, cell{"one", 1, 2}, make([][]byte, 10), time.Second)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want the side's refusal", err)
	}
}

// TestRunNeedsBothServers: without a binary for either side nothing runs.
func TestRunNeedsBothServers(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), &out, "", "/bin/true", time.Second, 1, false, regexp.MustCompile("")); err == nil {
		t.Fatal("ran without castellan-server")
	}
	if err := run(t.Context(), &out, "/bin/true", "", time.Second, 1, false, regexp.MustCompile("")); err == nil {
		t.Fatal("ran without spire-server")
	}
}

// TestFloorMeasuresRealWork: the floor is positive, and checking a CSR
// signature costs more than signing (ECDSA verification is the dearer
// half), which would not hold if either loop did nothing.
func TestFloorMeasuresRealWork(t *testing.T) {
	csrs, err := workloadCSRs(castellanID, 20)
	if err != nil {
		t.Fatal(err)
	}
	f, err := measureFloor(csrs, 200)
	if err != nil {
		t.Fatal(err)
	}
	if f.sign <= 0 || f.check <= f.sign {
		t.Fatalf("floor %s: want a positive signature cost below the check's", f)
	}
	m, err := medianFloor(csrs, 3, 100)
	if err != nil || m.sign <= 0 || m.check <= m.sign {
		t.Fatalf("median floor %s, %v: want a positive signature cost below the check's", m, err)
	}
	csrs[3] = append([]byte(nil), csrs[3][:len(csrs[3])-4]...)
	if _, err := measureFloor(csrs, 20); err == nil {
		t.Fatal("a truncated CSR was accepted by the floor's check")
	}
}
