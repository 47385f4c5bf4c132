package caconn

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestRetryAfterOnlyForSafeCodes(t *testing.T) {
	backoff := func(n int) time.Duration { return time.Duration(n) * time.Second }
	hinted := func(d time.Duration) error {
		st, err := status.New(codes.ResourceExhausted, "quota").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	for _, tc := range []struct {
		name  string
		err   error
		wait  time.Duration
		retry bool
	}{
		{"unavailable", status.Error(codes.Unavailable, "down"), 3 * time.Second, true},
		{"hinted quota", hinted(7 * time.Second), 7 * time.Second, true},
		{"quota without hint", status.Error(codes.ResourceExhausted, "quota"), 0, false},
		{"permission denied", status.Error(codes.PermissionDenied, "not your entry"), 0, false},
		{"invalid argument", status.Error(codes.InvalidArgument, "bad CSR"), 0, false},
		{"unauthenticated", status.Error(codes.Unauthenticated, "no SVID"), 0, false},
		{"deadline", status.Error(codes.DeadlineExceeded, "slow"), 0, false},
		{"internal", status.Error(codes.Internal, "bug"), 0, false},
		{"not a status", errors.New("plain"), 0, false},
	} {
		wait, retry := retryAfter(tc.err, 3, backoff)
		if wait != tc.wait || retry != tc.retry {
			t.Errorf("%s: retryAfter = %v, %v; want %v, %v", tc.name, wait, retry, tc.wait, tc.retry)
		}
	}
}
