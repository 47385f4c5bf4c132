package main

import (
	"context"
	"errors"
)

// runCerts runs `castellanctl certs ...` (list, show, revoke issued
// certificates). It is implemented with the audit API.
func runCerts(ctx context.Context, g *globals, args []string) error {
	return errors.New("castellanctl: certs: not available yet")
}
