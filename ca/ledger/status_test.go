package ledger

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/store"
)

func TestStatusMapsEveryLedgerError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("serial ab: %w", entry.ErrNotFound), codes.NotFound},
		{entry.ErrInvalidArgument, codes.InvalidArgument},
		{entry.ErrInvalidEvent, codes.InvalidArgument},
		{revocation.ErrAlreadyRevoked, codes.AlreadyExists},
		{agents.ErrAlreadyBanned, codes.AlreadyExists},
		{agents.ErrNotBanned, codes.FailedPrecondition},
		{entry.ErrReadOnly, codes.FailedPrecondition},
		{entry.ErrClosed, codes.Unavailable},
		{fmt.Errorf("x: %w", reserve.ErrDiskReserve), codes.Unavailable},
		{entry.ErrDamaged, codes.DataLoss},
		{fmt.Errorf("ledger: append: %w", fmt.Errorf("pgstore: %w: dial tcp: refused", store.ErrUnavailable)), codes.Unavailable},
		{fmt.Errorf("ledger: append: %w", store.ErrCommitUnknown), codes.Unavailable},
		{fmt.Errorf("ledger: %w", store.ErrClosed), codes.Unavailable},
		{fmt.Errorf("ledger: %w", store.ErrReadOnly), codes.FailedPrecondition},
		{fmt.Errorf("%w: other key", logkey.ErrKeyMismatch), codes.FailedPrecondition},
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
