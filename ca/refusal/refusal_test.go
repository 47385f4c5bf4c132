package refusal_test

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/ca/refusal"
)

func TestRefusalIsItsStatusWhereverItIsWrapped(t *testing.T) {
	err := refusal.Errorf(codes.PermissionDenied, "not_assigned", "authz: no entry assigns %s to node %q", "spiffe://td/a", "n1")
	wrapped := fmt.Errorf("issue: %w", err)
	for _, e := range []error{err, wrapped} {
		st, ok := status.FromError(e)
		if !ok || st.Code() != codes.PermissionDenied {
			t.Fatalf("status of %v: %v %v, want PermissionDenied", e, st.Code(), ok)
		}
		if st.Message() != e.Error() {
			t.Errorf("status message %q, want %q", st.Message(), e.Error())
		}
		if got := refusal.ReasonOf(e); got != "not_assigned" {
			t.Errorf("ReasonOf(%v) = %q", e, got)
		}
	}
	if err.Error() != `authz: no entry assigns spiffe://td/a to node "n1"` {
		t.Errorf("message %q", err.Error())
	}
}

func TestErrorfWrapsItsCause(t *testing.T) {
	err := refusal.Errorf(codes.InvalidArgument, "ttl_too_long", "authority: %w", fs.ErrInvalid)
	if !errors.Is(err, fs.ErrInvalid) {
		t.Fatal("errors.Is does not see the wrapped sentinel")
	}
	if e, ok := refusal.As(fmt.Errorf("x: %w", err)); !ok || e != err {
		t.Fatal("As does not find the refusal through a wrapper")
	}
}

func TestFailureTellsTheMessageAndKeepsTheCause(t *testing.T) {
	cause := fmt.Errorf("pq: connection refused to 10.0.0.7:5432: %w", fs.ErrNotExist)
	err := refusal.Failure(codes.Unavailable, "server: the issuance ledger is unavailable; retry later", cause)
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || st.Message() != "server: the issuance ledger is unavailable; retry later" {
		t.Fatalf("status %v %q", st.Code(), st.Message())
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Error("errors.Is does not see the cause")
	}
	if got := refusal.ReasonOf(err); got != refusal.Internal {
		t.Errorf("ReasonOf(failure) = %q, want %q: a failure of the CA is not a refusal", got, refusal.Internal)
	}
}

func TestRetryAfterIsARetryInfoDetail(t *testing.T) {
	err := &refusal.Error{Code: codes.ResourceExhausted, Reason: "quota_node", Err: errors.New("quota: exceeded"), RetryAfter: 90 * time.Second}
	d := status.Convert(err).Details()
	if len(d) != 1 {
		t.Fatalf("details %v, want one RetryInfo", d)
	}
	if ri, ok := d[0].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != 90*time.Second {
		t.Fatalf("detail %v, want RetryInfo of 90s", d[0])
	}
	if d := status.Convert(refusal.Errorf(codes.ResourceExhausted, "r", "m")).Details(); len(d) != 0 {
		t.Fatalf("details without RetryAfter: %v", d)
	}
}

func TestReasonOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("disk full"), refusal.Internal},
		{status.Error(codes.Unavailable, "down"), refusal.Internal},
		{refusal.Errorf(codes.Unauthenticated, "join_token_used", "authn: used"), "join_token_used"},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", refusal.Errorf(codes.InvalidArgument, "malformed_csr", "m"))), "malformed_csr"},
	} {
		if got := refusal.ReasonOf(tc.err); got != tc.want {
			t.Errorf("ReasonOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
