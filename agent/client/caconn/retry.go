package caconn

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/agent/rotate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// DefaultFailoverTimeout is how long a unary call keeps trying CA
// endpoints after its first attempt failed, unless Config says otherwise.
const DefaultFailoverTimeout = 10 * time.Second

// failoverBackoff spaces the attempts of one call: from 100ms, doubling,
// at most 2s, with jitter so that agents that lost the same replica do
// not all arrive at the next one together.
var failoverBackoff = rotate.Policy{BackoffBase: 100 * time.Millisecond, BackoffCap: 2 * time.Second}

// retryAfter decides whether a call that failed with err may be tried
// again, and after how long (attempt counts the failures so far, from 1):
//   - Unavailable (the endpoint is down, unreachable, or lost its
//     datastore and issued nothing): yes, after backoff(attempt); gRPC's
//     round_robin picks the next ready endpoint;
//   - ResourceExhausted with the CA's RetryInfo: yes, after exactly the
//     delay the CA asked for, never sooner (quotas hold across replicas,
//     so asking another one earlier would be refused too);
//   - every other code (PermissionDenied, InvalidArgument,
//     Unauthenticated, DeadlineExceeded, ...): no, the answer would be the
//     same.
func retryAfter(err error, attempt int, backoff func(attempt int) time.Duration) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	switch st.Code() {
	case codes.Unavailable:
		return backoff(attempt), true
	case codes.ResourceExhausted:
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().IsValid() {
				return max(ri.GetRetryDelay().AsDuration(), 0), true
			}
		}
	}
	return 0, false
}

// failover is a unary interceptor that retries a call on CA endpoints
// while retryAfter allows it, for at most Config.FailoverTimeout after
// the first attempt and never past the call's own deadline. It logs which
// endpoint served a call that another failed, and counts it.
func (d *Dialer) failover(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := d.clock.Now()
	giveUp := start.Add(d.failoverTimeout)
	call := path.Base(method)
	var failed []string // endpoints that failed this call, in order
	for attempt := 1; ; attempt++ {
		var p peer.Peer
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
		served := endpointOf(&p)
		if err == nil {
			d.served(call, served, failed)
			return nil
		}
		failed = append(failed, cmp.Or(served, noEndpoint))
		wait, ok := retryAfter(err, attempt, func(n int) time.Duration { return failoverBackoff.Backoff(n, 0) })
		if !ok || ctx.Err() != nil {
			return err
		}
		now := d.clock.Now()
		if dl, ok := ctx.Deadline(); now.Add(wait).After(giveUp) || ok && time.Until(dl) < wait {
			return fmt.Errorf("client: %s: no CA endpoint served the call within %s (%d attempts, failed on %s): %w",
				call, now.Sub(start).Round(time.Millisecond), attempt, strings.Join(failed, ", "), err)
		}
		d.metrics.retries.WithLabelValues(call, status.Code(err).String()).Inc()
		d.log.Debug("CA call failed; retrying", "call", call, "endpoint", failed[len(failed)-1],
			"code", status.Code(err).String(), "retry_in", wait.String(), "attempt", attempt)
		select {
		case <-ctx.Done():
			return fmt.Errorf("client: %s: stopped retrying (%w): %w", call, ctx.Err(), err)
		case <-d.clock.After(wait):
		}
	}
}

// served logs and counts the endpoint that answered call after the
// endpoints in failed did not.
func (d *Dialer) served(call, endpoint string, failed []string) {
	if len(failed) == 0 {
		d.log.Debug("CA call served", "call", call, "endpoint", endpoint)
		return
	}
	for _, f := range failed {
		if f != noEndpoint && f != endpoint {
			d.metrics.failovers.WithLabelValues(call).Inc()
			d.log.Info("CA call failed over", "call", call, "served_by", endpoint, "failed_on", failed)
			return
		}
	}
	d.log.Info("CA call served on retry", "call", call, "served_by", endpoint, "failed_on", failed)
}

// endpointOf is the address of a call's peer, or "" if the call never
// reached one.
func endpointOf(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return ""
	}
	return p.Addr.String()
}

// noEndpoint stands for the endpoint of an attempt that reached none
// (every endpoint down or still connecting).
const noEndpoint = "(none ready)"
