package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrTokenRefused marks a join token the CA refused (Unauthenticated,
// PermissionDenied, InvalidArgument): retrying it cannot succeed, and the
// CA would report every retry as another reuse.
var ErrTokenRefused = errors.New("the CA refused the join token; create a new one (castellanctl token create --node NAME --out FILE) and restart the agent with --join-token-file FILE")

// Bootstrap backoff: the first retry after a second, doubling up to half
// a minute.
const (
	bootstrapFirstRetry = time.Second
	bootstrapMaxRetry   = 30 * time.Second
)

// BootstrapRetrying obtains the agent SVID with attempt (a call of
// Bootstrap or BootstrapK8s), retrying on the client's clock, with
// backoff, while the CA cannot be reached. It gives up at once, returning
// the error, when retrying cannot help: no usable SVID and no token
// (ErrNoAgentSVID), or a refused join token (ErrTokenRefused); both say
// what the operator must do.
func (c *Client) BootstrapRetrying(ctx context.Context, attempt func(context.Context) error) error {
	delay := bootstrapFirstRetry
	for {
		err := attempt(ctx)
		if err == nil || errors.Is(err, ErrNoAgentSVID) || errors.Is(err, ErrTokenRefused) {
			return err
		}
		c.log.Warn("bootstrap with the CA failed; retrying", "error", err.Error(), "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.cfg.Clock.After(delay):
		}
		delay = min(2*delay, bootstrapMaxRetry)
	}
}

// tokenRefused marks err as ErrTokenRefused when the CA refused the join
// token itself.
func tokenRefused(err error) error {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return fmt.Errorf("%w: %w", ErrTokenRefused, err)
	}
	return err
}
