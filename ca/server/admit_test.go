package server

import (
	"context"
	"crypto/elliptic"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/server/admission"
	"github.com/castellan-dev/castellan/ca/server/edge"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gateQuota is a Config.Quota whose first Take, made while a CSR is
// admitted, blocks until open is closed: it holds the CA's room for
// as long as a test needs. entered is closed once that Take runs.
type gateQuota struct {
	once    sync.Once
	entered chan struct{}
	open    chan struct{}
}

func newGateQuota() *gateQuota {
	return &gateQuota{entered: make(chan struct{}), open: make(chan struct{})}
}

func (q *gateQuota) Take(string, string, time.Duration) error {
	first := false
	q.once.Do(func() { first = true })
	if first {
		close(q.entered)
		<-q.open
	}
	return nil
}

// withAdmission bounds the CSRs in flight to max, waiting at most wait
// for room, with the gate as the quota.
func withAdmission(max int, wait time.Duration, gate *gateQuota) envOption {
	return func(c *Config) {
		c.MaxCSRsInFlight, c.AdmissionWait = max, wait
		if gate != nil {
			c.Quota = gate
		}
	}
}

func batchOf(t testing.TB, n int, id string) *cav1.BatchSignX509SVIDRequest {
	t.Helper()
	b := &cav1.BatchSignX509SVIDRequest{}
	for range n {
		b.Requests = append(b.Requests, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, ecKey(t, elliptic.P256()), id)})
	}
	return b
}

// wantBusy checks that err is the CA's busy refusal: ResourceExhausted,
// a message naming the bound, and a RetryInfo delay in [wait, 2 wait).
func wantBusy(t *testing.T, err error, wait time.Duration) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "the CA is busy") || !strings.Contains(st.Message(), "at most 4 at once") {
		t.Fatalf("got %v, want ResourceExhausted: the CA is busy ... at most 4 at once", err)
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			if got := ri.GetRetryDelay().AsDuration(); got < wait || got >= 2*wait {
				t.Fatalf("RetryInfo delay %v, want in [%v, %v)", got, wait, 2*wait)
			}
			return
		}
	}
	t.Fatalf("refusal %v carries no RetryInfo", err)
}

// allIssued fails unless every result of res is an SVID.
func allIssued(t *testing.T, res *cav1.BatchSignX509SVIDResponse, n int) {
	t.Helper()
	if len(res.GetResults()) != n {
		t.Fatalf("%d results, want %d", len(res.GetResults()), n)
	}
	for i, r := range res.GetResults() {
		if r.GetSvid() == nil {
			t.Fatalf("item %d: %v", i, r.GetError())
		}
	}
}

// While the CA works on as many CSRs as it may, further calls (batch and
// single) are refused with ResourceExhausted and RetryInfo after waiting
// at most half their deadline; nothing of theirs is signed or logged, the
// refusals are counted, and once the work ends the same calls succeed.
func TestBusyCARefusesCallsBeyondCapacity(t *testing.T) {
	gate := newGateQuota()
	e := newEnv(t, withAdmission(4, 10*time.Second, gate))
	const id = "spiffe://cluster.local/ns/a/sa/b"
	e.addEntry(t, id, "n1")
	c := e.agentClient(t, "n1")
	held := make(chan error, 1)
	go func() {
		res, err := c.BatchSignX509SVID(context.Background(), batchOf(t, 4, id))
		if err == nil && len(res.GetResults()) == 4 && res.GetResults()[3].GetSvid() == nil {
			err = errors.New(res.GetResults()[3].GetError().GetMessage())
		}
		held <- err
	}()
	<-gate.entered
	size := e.ledger.Size()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.BatchSignX509SVID(ctx, batchOf(t, 3, id))
	wantBusy(t, err, 10*time.Second)
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("refused after %v, want after waiting half the 2s deadline", d)
	}
	ctx1, cancel1 := context.WithTimeout(context.Background(), time.Second)
	defer cancel1()
	_, err = c.SignX509SVID(ctx1, &cav1.SignX509SVIDRequest{Csr: workloadCSR(t, ecKey(t, elliptic.P256()), id)})
	wantBusy(t, err, 10*time.Second)
	if got := e.ledger.Size(); got != size {
		t.Fatalf("ledger grew by %d while every call was refused", got-size)
	}
	if n := e.metric("castellan_csrs_in_flight"); n != 4 {
		t.Fatalf("castellan_csrs_in_flight = %v, want 4", n)
	}
	if n := e.metric("castellan_csrs_refused_busy_total"); n != 4 {
		t.Fatalf("castellan_csrs_refused_busy_total = %v, want 4 (3 + 1 CSRs refused)", n)
	}
	if n := e.csrCount(edge.ResultRefused, admission.ReasonBusy); n != 2 {
		t.Fatalf("castellan_csr_total{reason=ca_busy} = %v, want 2 calls", n)
	}
	close(gate.open)
	if err := <-held; err != nil {
		t.Fatalf("the admitted batch: %v", err)
	}
	res, err := c.BatchSignX509SVID(context.Background(), batchOf(t, 4, id))
	if err != nil {
		t.Fatalf("after the work ended: %v", err)
	}
	allIssued(t, res, 4)
	if got := e.ledger.Size(); got != size+8 {
		t.Fatalf("ledger grew by %d, want 8 (the admitted batch and the last one)", got-size)
	}
	if n := e.metric("castellan_csrs_in_flight"); n != 0 {
		t.Fatalf("castellan_csrs_in_flight = %v after every call ended, want 0", n)
	}
}

// Room is given back when a call's items all fail, and when its caller
// cancels it while its CSRs are being worked on: a later call needing the
// whole capacity is admitted (it would wait its full deadline otherwise).
func TestAdmissionReleasedAfterFailureAndCancellation(t *testing.T) {
	gate := newGateQuota()
	e := newEnv(t, withAdmission(4, 10*time.Second, gate))
	const id = "spiffe://cluster.local/ns/a/sa/b"
	e.addEntry(t, id, "n1")
	c := e.agentClient(t, "n1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.BatchSignX509SVID(ctx, batchOf(t, 4, id))
		done <- err
	}()
	<-gate.entered
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled call: %v, want Canceled", err)
	}
	close(gate.open)
	// Not assigned to n1: every item is refused by authz.
	res, err := c.BatchSignX509SVID(context.Background(), batchOf(t, 4, "spiffe://cluster.local/ns/other/sa/x"))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.GetResults() {
		if codes.Code(r.GetError().GetCode()) != codes.PermissionDenied {
			t.Fatalf("item %d of a denied batch: %v", i, r)
		}
	}
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelShort()
	res, err = c.BatchSignX509SVID(short, batchOf(t, 4, id))
	if err != nil {
		t.Fatalf("after a cancelled and a failed call: %v", err)
	}
	allIssued(t, res, 4)
	if n := e.metric("castellan_csrs_in_flight"); n != 0 {
		t.Fatalf("castellan_csrs_in_flight = %v, want 0", n)
	}
}

// A batch larger than the whole capacity takes all of it rather than
// waiting for ever; an unbounded server admits anything.
func TestAdmissionOfOversizedBatchAndUnbounded(t *testing.T) {
	const id = "spiffe://cluster.local/ns/a/sa/b"
	for _, max := range []int{4, -1} {
		e := newEnv(t, withAdmission(max, 100*time.Millisecond, nil))
		e.addEntry(t, id, "n1")
		res, err := e.agentClient(t, "n1").BatchSignX509SVID(context.Background(), batchOf(t, 9, id))
		if err != nil {
			t.Fatalf("max %d: batch of 9: %v", max, err)
		}
		allIssued(t, res, 9)
	}
}
