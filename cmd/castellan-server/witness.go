package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/tlog"
	"github.com/castellan-dev/castellan/ca/witness"
	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// startWitnesser submits the ledger's checkpoints to the policy's
// witnesses until ctx ends, storing each cosigned checkpoint in the
// ledger (all replicas serve the one stored). Every replica may run one:
// a replica that loses a race to a witness gets a 409 and tries again.
func startWitnesser(ctx context.Context, p *witness.Policy, led *ledger.Ledger, interval time.Duration, reg *prometheus.Registry, log *slog.Logger) {
	log = log.With("component", "witness")
	client := witness.New(p, witness.ClientConfig{Logger: log, Registry: reg})
	w := witness.NewWitnesser(client, led, witness.WitnesserConfig{
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
func tlogOptions(d *deps) tlog.Config {
	opts := tlog.Config{Logger: d.log}
	if d.witnesses != nil {
		opts.Witnessed = d.ledger.WitnessedCheckpoint
	}
	return opts
}

// startWitnessing runs the Witnesser when a policy is configured.
func startWitnessing(ctx context.Context, c config.Witness, d *deps) {
	if d.witnesses != nil {
		startWitnesser(ctx, d.witnesses, d.ledger, c.WitnessInterval, d.registry, d.log)
	}
}

// ledgerKeyFile is the file holding the log key: --ledger-key-file, else
// (bbolt) ledger.db.key beside the ledger file.
func ledgerKeyFile(cfg config.Config, ds *datastore) string {
	if cfg.LedgerKeyFile != "" || (ds != nil && ds.ledger != nil) {
		return cfg.LedgerKeyFile
	}
	return filepath.Join(cfg.DataDir, ledgerFile) + ".key"
}
