package logcheck

import (
	"context"
	"errors"
)

// Monitor proves certs in the background (the manager already serves
// them) and raises an alarm for each one not proven: an Error log line
// and castellan_agent_log_unverified_total. describe names a certificate
// in the alarm (its SPIFFE ID and serial).
func (c *Checker) Monitor(ctx context.Context, certs []Cert, describe func(i int) []any) {
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		for i, err := range c.Prove(ctx, certs) {
			if err == nil || errors.Is(err, context.Canceled) {
				continue
			}
			c.metrics.unverified.Inc()
			c.log.Error("LOG ALARM: serving a certificate that is not proven to be in the witnessed issuance log (--log-policy monitor)",
				append(describe(i), "error", err.Error())...)
		}
	}()
}

// count records the outcome of each proof.
func (c *Checker) count(errs []error) {
	for _, err := range errs {
		switch {
		case err == nil:
			c.metrics.proofs.WithLabelValues("proven").Inc()
		case errors.Is(err, ErrNotWitnessed):
			c.metrics.proofs.WithLabelValues("timeout").Inc()
		default:
			c.metrics.proofs.WithLabelValues("refused").Inc()
		}
	}
}
