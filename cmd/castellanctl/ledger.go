package main

import (
	"context"
	"errors"
)

// runLedger runs `castellanctl ledger ...` (verify, checkpoint, prove,
// export). It is implemented with the audit API.
func runLedger(ctx context.Context, g *globals, args []string) error {
	return errors.New("castellanctl: ledger: not available yet")
}
