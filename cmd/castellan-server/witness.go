package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/tlog"
	"github.com/castellan-dev/castellan/ca/witness"
	"github.com/prometheus/client_golang/prometheus"
)

// witnessConfig is the issuance log's origin and witness policy; its
// fields are flags, environment variables and YAML keys like the others.
type witnessConfig struct {
	LedgerOrigin    string        `yaml:"ledger_origin"`
	Witnesses       []string      `yaml:"witness"`
	WitnessQuorum   int           `yaml:"witness_quorum"`
	WitnessPolicy   string        `yaml:"witness_policy"`
	WitnessInterval time.Duration `yaml:"witness_interval"`
}

// witnessFlags registers the log's origin and witness flags.
func witnessFlags(fs *flag.FlagSet, c *witnessConfig) {
	fs.StringVar(&c.LedgerOrigin, "ledger-origin", c.LedgerOrigin, "origin line (name) of a NEW issuance log, which names its key too (default <trust-domain>/castellan/ledger); an existing ledger keeps the origin its key was made for")
	fs.Var(listFlag{&c.Witnesses}, "witness", "a witness to submit the log's checkpoints to over C2SP tlog-witness, NAME=URL+VKEY (repeatable; VKEY is its cosignature/v1 verifier key); /log/checkpoint then serves the cosigned checkpoint and agents can check it (--log-policy)")
	fs.IntVar(&c.WitnessQuorum, "witness-quorum", c.WitnessQuorum, "how many of the --witness witnesses must cosign a checkpoint (0: all)")
	fs.StringVar(&c.WitnessPolicy, "witness-policy", c.WitnessPolicy, "YAML witness policy file (quorum; witnesses: name, url, key); exclusive with --witness")
	fs.DurationVar(&c.WitnessInterval, "witness-interval", c.WitnessInterval, "least time between two submissions of a grown log to the witnesses (0: 1s)")
}

// policy returns the witness policy, nil if none is configured.
func (c witnessConfig) policy() (*witness.Policy, error) {
	return witness.PolicyFromFlags(c.WitnessPolicy, c.Witnesses, c.WitnessQuorum)
}

// validate checks the witness flags.
func (c witnessConfig) validate() error {
	if c.WitnessInterval < 0 {
		return fmt.Errorf("--witness-interval %s is negative", c.WitnessInterval)
	}
	_, err := c.policy()
	return err
}

// ledgerOrigin returns the origin to open the ledger with: the name of
// the existing log key in keyFile (an existing ledger keeps its origin,
// which its key is named after), else --ledger-origin, else
// <trust-domain>/castellan/ledger.
func ledgerOrigin(c witnessConfig, trustDomain, keyFile string) (string, error) {
	b, err := os.ReadFile(keyFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if c.LedgerOrigin != "" {
			return c.LedgerOrigin, nil
		}
		return logkey.OriginFor(trustDomain), nil
	case err != nil:
		return "", fmt.Errorf("castellan-server: read the log key: %w", err)
	}
	name, ok := keyName(strings.TrimSpace(string(b)))
	if !ok {
		return "", fmt.Errorf("castellan-server: the log key %s is not a note signer key (PRIVATE+KEY+<name>+...)", keyFile)
	}
	if c.LedgerOrigin != "" && c.LedgerOrigin != name {
		return "", fmt.Errorf("castellan-server: --ledger-origin %q: the existing ledger's key %s is for origin %q, and a log cannot be renamed (its checkpoints and witnesses name it); drop --ledger-origin", c.LedgerOrigin, keyFile, name)
	}
	return name, nil
}

// keyName returns the key name of a note signer key.
func keyName(skey string) (string, bool) {
	rest, ok := strings.CutPrefix(skey, "PRIVATE+KEY+")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "+")
	return name, ok && name != ""
}

// startWitnesser submits the ledger's checkpoints to the policy's
// witnesses until ctx ends, storing each cosigned checkpoint in the
// ledger (all replicas serve the one stored). Every replica may run one:
// a replica that loses a race to a witness gets a 409 and tries again.
func startWitnesser(ctx context.Context, p *witness.Policy, led *ledger.Ledger, interval time.Duration, reg *prometheus.Registry, log *slog.Logger) {
	log = log.With("component", "witness")
	client := witness.New(p, witness.WithLogger(log), witness.WithRegistry(reg))
	w := witness.NewWitnesser(client, led, witness.WitnesserOptions{
		Latest:      led.WitnessedCheckpoint(),
		OnWitnessed: led.StoreWitnessedCheckpoint,
		Interval:    interval,
		Logger:      log,
		Registry:    reg,
	})
	log.Info("witnessing the issuance log", "origin", led.Origin(), "policy", p.String())
	go func() { _ = w.Run(ctx) }()
}

// tlogOptions are the /log/ handler's options: with a witness policy,
// /log/checkpoint serves the cosigned checkpoint.
func tlogOptions(d *deps) tlog.Options {
	opts := tlog.Options{Logger: d.log}
	if d.witnesses != nil {
		opts.Witnessed = d.ledger.WitnessedCheckpoint
	}
	return opts
}

// startWitnessing runs the Witnesser when a policy is configured.
func startWitnessing(ctx context.Context, c witnessConfig, d *deps) {
	if d.witnesses != nil {
		startWitnesser(ctx, d.witnesses, d.ledger, c.WitnessInterval, d.registry, d.log)
	}
}

// ledgerKeyFile is the file holding the log key: --ledger-key-file, else
// (bbolt) ledger.db.key beside the ledger file.
func ledgerKeyFile(cfg config, ds *datastore) string {
	if cfg.LedgerKeyFile != "" || (ds != nil && ds.ledger != nil) {
		return cfg.LedgerKeyFile
	}
	return filepath.Join(cfg.DataDir, ledgerFile) + ".key"
}
