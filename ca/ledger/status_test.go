package ledger

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatusMapsEveryLedgerError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("serial ab: %w", ErrNotFound), codes.NotFound},
		{ErrInvalidArgument, codes.InvalidArgument},
		{ErrInvalidEvent, codes.InvalidArgument},
		{ErrAlreadyRevoked, codes.AlreadyExists},
		{ErrAlreadyBanned, codes.AlreadyExists},
		{ErrNotBanned, codes.FailedPrecondition},
		{ErrReadOnly, codes.FailedPrecondition},
		{ErrClosed, codes.Unavailable},
		{fmt.Errorf("x: %w", ErrDiskReserve), codes.Unavailable},
		{ErrDamaged, codes.DataLoss},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("bbolt: something else"), codes.Internal},
	} {
		st, _ := status.FromError(Status("audit", tc.err))
		if st.Code() != tc.want || st.Message() != "audit: "+tc.err.Error() {
			t.Errorf("Status(%v) = %v %q; want %v", tc.err, st.Code(), st.Message(), tc.want)
		}
	}
	if Status("audit", nil) != nil {
		t.Error("Status(nil) is not nil")
	}
	pass := status.Error(codes.PermissionDenied, "no")
	if Status("audit", pass) != pass {
		t.Error("a gRPC status error did not pass through unchanged")
	}
}
