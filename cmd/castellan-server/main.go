// Command castellan-server is the Castellan certificate authority: it signs
// SPIFFE X.509-SVIDs for node agents over gRPC (TLS, mutual TLS after
// attestation), serves the admin API on an owner-only Unix socket in its
// data directory, and exports Prometheus metrics and health endpoints over
// HTTP.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/castellan-dev/castellan/cmd/castellan-server/internal/config"
	"github.com/castellan-dev/castellan/internal/version"
)

func main() {
	if version.Print("castellan-server", os.Args[1:], os.Stdout) {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// run starts the server and returns the exit code: 0 after a clean
// shutdown, 1 on failure, 2 on a command-line error.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if errors.Is(err, config.ErrUsage) {
			return 2
		}
		return 1
	}
	level, _ := config.ParseLevel(cfg.LogLevel)
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("castellan-server failed", "error", err.Error())
		return 1
	}
	return 0
}
