package sds

import (
	"context"
	"time"

	"github.com/castellan-dev/castellan/agent/state"
)

// serve runs one SDS stream of either flavour until the client goes away,
// the attested process exits or handling fails: requests go to onRequest,
// and every change of the state store to push (which reports whether it
// sent anything, so that only real pushes are timed). The caller's
// attestation is re-checked before each.
func serve[T any](ctx context.Context, store *state.Store, m Metrics, recv func() (*T, error), onRequest func(*T) error, push func() (bool, error)) error {
	addGauge(m.Streams, 1)
	defer addGauge(m.Streams, -1)

	watch, stop := store.Watch()
	defer stop()
	reqs, errc := recvLoop(ctx, recv)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case req := <-reqs:
			if err := stillAttested(ctx); err != nil {
				return err
			}
			if err := onRequest(req); err != nil {
				return err
			}
		case <-watch:
			woke := time.Now()
			if err := stillAttested(ctx); err != nil {
				return err
			}
			sent, err := push()
			if err != nil {
				return err
			}
			if sent && m.PushLatency != nil {
				m.PushLatency.Observe(time.Since(woke).Seconds())
			}
		}
	}
}

// recvLoop receives messages until an error, which it delivers on errc.
func recvLoop[T any](ctx context.Context, recv func() (*T, error)) (<-chan *T, <-chan error) {
	reqs, errc := make(chan *T), make(chan error, 1)
	go func() {
		for {
			m, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, errc
}
