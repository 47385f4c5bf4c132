package ledger

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/castellan-dev/castellan/ca/ledger/agents"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/ledger/reserve"
	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/ca/store"
)

// Status is the gRPC status error a front end returns for err, a ledger
// error: the one mapping of ledger errors to codes, shared by the audit and
// admin APIs. A gRPC status error passes through unchanged; nil stays nil.
// prefix names the API in the message ("audit", "server").
func Status(prefix string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(code(err), fmt.Sprintf("%s: %v", prefix, err))
}

func code(err error) codes.Code {
	switch {
	case errors.Is(err, entry.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, entry.ErrInvalidArgument), errors.Is(err, entry.ErrInvalidEvent):
		return codes.InvalidArgument
	case errors.Is(err, revocation.ErrAlreadyRevoked), errors.Is(err, agents.ErrAlreadyBanned):
		return codes.AlreadyExists
	case errors.Is(err, agents.ErrNotBanned), errors.Is(err, entry.ErrReadOnly), errors.Is(err, logkey.ErrKeyMismatch),
		errors.Is(err, store.ErrReadOnly):
		return codes.FailedPrecondition
	case errors.Is(err, entry.ErrClosed), errors.Is(err, reserve.ErrDiskReserve),
		errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, entry.ErrDamaged):
		return codes.DataLoss
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	return codes.Internal
}
