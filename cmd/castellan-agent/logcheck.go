package main

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/castellan-dev/castellan/agent/manager"
	"github.com/castellan-dev/castellan/internal/witness"
	"github.com/prometheus/client_golang/prometheus"
)

// logConfig is the issuance-log check's part of the configuration.
type logConfig struct {
	Policy        string // --log-policy: enforce, monitor, off; "" picks (see mode)
	Key           string
	Origin        string
	Witnesses     []string
	Quorum        int
	WitnessPolicy string
	Wait          time.Duration
}

// logFlags registers the log check's flags on fs.
func logFlags(fs *flag.FlagSet, c *logConfig) {
	fs.StringVar(&c.Policy, "log-policy", c.Policy, "check that each new SVID is in the CA's witnessed issuance log before serving it: "+
		"enforce (hold it back, keep serving the old one, until proven), monitor (serve it, alarm if it cannot be proven) or off; "+
		"default: enforce when a witness policy and --log-key are given, off otherwise")
	fs.StringVar(&c.Key, "log-key", c.Key, "the issuance log's note verifier key, pinned (castellanctl ledger checkpoint -o json prints it as verifier_key)")
	fs.StringVar(&c.Origin, "log-origin", c.Origin, "the log's origin line (default: the --log-key's name)")
	fs.Var(&listFlag{p: &c.Witnesses}, "witness", "a witness the log's checkpoints must be cosigned by, NAME=URL+VKEY (repeatable; the same policy as the server's)")
	fs.IntVar(&c.Quorum, "witness-quorum", c.Quorum, "how many of the --witness witnesses must cosign (0: all)")
	fs.StringVar(&c.WitnessPolicy, "witness-policy", c.WitnessPolicy, "YAML witness policy file (quorum, witnesses: name, url, key); exclusive with --witness")
	fs.DurationVar(&c.Wait, "log-wait", c.Wait, "how long one proof of new SVIDs may wait for the log to witness them before the issuance is retried")
}

// witnessPolicy returns the configured witness policy, nil if none.
func (c logConfig) witnessPolicy() (*witness.Policy, error) {
	return witness.PolicyFromFlags(c.WitnessPolicy, c.Witnesses, c.Quorum)
}

// mode returns the log policy and the witness policy. Without
// --log-policy, a configured witness policy and log key mean enforce:
// configuring witnesses says the operator wants them checked, and monitor
// would serve an unlogged certificate.
func (c logConfig) mode() (logcheck.Mode, *witness.Policy, error) {
	p, err := c.witnessPolicy()
	if err != nil {
		return logcheck.Off, nil, err
	}
	if c.Policy == "" {
		if p != nil && c.Key != "" {
			return logcheck.Enforce, p, nil
		}
		return logcheck.Off, p, nil
	}
	m, err := logcheck.ParseMode(c.Policy)
	if err != nil {
		return logcheck.Off, nil, fmt.Errorf("--log-policy: %w", err)
	}
	if m != logcheck.Off && (p == nil || c.Key == "") {
		return logcheck.Off, nil, fmt.Errorf("--log-policy %s needs the log's key (--log-key) and a witness policy (--witness or --witness-policy)", m)
	}
	return m, p, nil
}

// newLogChecker returns the log checker of the configuration, nil when
// the policy is off.
func newLogChecker(c logConfig, ca *client.Client, store *cache.Cache, reg *prometheus.Registry, log *slog.Logger) (logcheck.Mode, *logcheck.Checker, error) {
	m, p, err := c.mode()
	if err != nil || m == logcheck.Off {
		return m, nil, err
	}
	chk, err := logcheck.New(logcheck.Config{
		Policy: p, LogKey: c.Key, Origin: c.Origin, Source: ca, Store: store, Wait: c.Wait,
		Registry: reg, Logger: log.With("component", "logcheck"),
	})
	if err != nil {
		return m, nil, err
	}
	log.Info("issuance log check on", "log_policy", m.String(), "witness_policy", p.String(), "accepted_size", chk.Accepted())
	return m, chk, nil
}

// optionalChecker returns chk as a manager.LogChecker, nil (not a nil
// pointer in an interface) when there is none.
func optionalChecker(chk *logcheck.Checker) manager.LogChecker {
	if chk == nil {
		return nil
	}
	return chk
}
