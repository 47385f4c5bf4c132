package monitor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/tlog/logentry"
	"github.com/castellan-dev/castellan/ca/tlog/monitor/state"
)

// RunOptions says how Run follows the log.
type RunOptions struct {
	// StatePath is the state file (see state.Load and state.Save).
	StatePath string
	// Follow keeps stepping every Interval until ctx ends; otherwise Run
	// makes one step.
	Follow   bool
	Interval time.Duration
	// StepTimeout bounds one step (0: none).
	StepTimeout time.Duration
	// Report receives the matching entries, a verified chunk at a time
	// (see Step). An error from it stops Run with the state unchanged, so
	// the step's matches are reported again next time: delivery is at
	// least once.
	Report func([]logentry.Entry) error
	// Stepped hears about each verified step before its state is saved.
	Stepped func(*Result)
	// Retrying, when following, hears about a step that failed because
	// the log was unavailable (ErrUnavailable); Run retries it after
	// Interval. Every other failure ends Run.
	Retrying func(error)
}

// Run loads the state, steps through the log, reports each step and
// saves the new state after it, once or (Follow) until ctx ends. When
// following, ctx ending is a normal stop (nil). A fork, an invalid log, a
// damaged state or a limit exceeded ends Run with the state as it was.
func (m *Monitor) Run(ctx context.Context, o RunOptions) error {
	if o.Follow && o.Interval <= 0 {
		return errors.New("monitor: following the log needs a positive interval")
	}
	st, err := state.Load(o.StatePath, m.cfg.LogKey, m.cfg.Origin)
	if err != nil {
		return err
	}
	for {
		next, err := m.step(ctx, st, o)
		switch {
		case err == nil:
			st = next
		case o.Follow && ctx.Err() != nil:
			return nil
		case o.Follow && errors.Is(err, ErrUnavailable) && o.Retrying != nil:
			o.Retrying(err)
		case o.Follow && errors.Is(err, ErrUnavailable):
		default:
			return err
		}
		if !o.Follow || !pause(ctx, o.Interval) {
			return nil
		}
	}
}

// step makes one step within StepTimeout, reports it and saves the state.
func (m *Monitor) step(ctx context.Context, st *state.State, o RunOptions) (*state.State, error) {
	sctx, cancel := ctx, context.CancelFunc(func() {})
	if o.StepTimeout > 0 {
		sctx, cancel = context.WithTimeout(ctx, o.StepTimeout)
	}
	defer cancel()
	report := func(es []logentry.Entry) error {
		if o.Report == nil {
			return nil
		}
		if err := o.Report(es); err != nil {
			return fmt.Errorf("monitor: reporting entries: %w", err)
		}
		return nil
	}
	res, err := m.Step(sctx, st, report)
	if err != nil {
		if ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w: the step did not finish within %s (%v); raise the time limit for a first pass over a large log", ErrLimit, o.StepTimeout, err)
		}
		return nil, err
	}
	if o.Stepped != nil {
		o.Stepped(res)
	}
	if st != nil && res.To == st.Checkpoint.Size {
		return st, nil
	}
	if err := state.Save(o.StatePath, res.State); err != nil {
		return nil, err
	}
	return res.State, nil
}

// pause waits d; false when ctx ended first.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
