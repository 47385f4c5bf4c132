package admission

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A call whose context ends while it waits for room leaves holding
// nothing: what others hold is unchanged, and once they release, the
// whole capacity can be taken at once.
func TestAdmissionCancelledWhileWaitingTakesNothing(t *testing.T) {
	a := New(4, time.Minute)
	w, err := a.Acquire(context.Background(), 3)
	if err != nil || w != 3 {
		t.Fatalf("acquire 3: %d, %v", w, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() {
		w, err := a.Acquire(ctx, 2)
		if err == nil {
			a.Release(w)
			err = errors.New("admitted 2 CSRs next to 3 of 4")
		}
		got <- err
	}()
	cancel()
	if err := <-got; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled waiter: %v, want Canceled", err)
	}
	if n := a.inFlight.Load(); n != 3 {
		t.Fatalf("%d in flight after the waiter left, want 3", n)
	}
	a.Release(w)
	all, err := a.Acquire(context.Background(), 4)
	if err != nil || all != 4 {
		t.Fatalf("the whole capacity after release: %d, %v", all, err)
	}
	a.Release(all)
	if n := a.inFlight.Load(); n != 0 {
		t.Fatalf("%d in flight at the end, want 0", n)
	}
}

// With no room, a call waits at most half its remaining deadline, then
// is refused with ResourceExhausted, its CSRs counted; a call whose
// deadline has passed gets DeadlineExceeded. Neither takes anything.
func TestAdmissionWaitsAtMostHalfTheDeadline(t *testing.T) {
	a := New(4, time.Minute)
	w, _ := a.Acquire(context.Background(), 4)
	defer a.Release(w)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := a.Acquire(ctx, 2)
	if status.Code(err) != codes.ResourceExhausted || time.Since(start) >= 2*time.Second {
		t.Fatalf("acquire with 2s left: %v after %v, want ResourceExhausted after ~1s", err, time.Since(start))
	}
	if n := testutil.ToFloat64(a.m.busy); n != 2 {
		t.Fatalf("castellan_csrs_refused_busy_total = %v, want 2", n)
	}
	<-ctx.Done()
	if _, err := a.Acquire(ctx, 1); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("acquire past the deadline: %v, want DeadlineExceeded", err)
	}
	if n := a.inFlight.Load(); n != 4 {
		t.Fatalf("%d in flight, want the 4 held", n)
	}
}
