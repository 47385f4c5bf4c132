// Package server holds what every Bookinfo service's main shares: JSON
// logging, JSON responses, /health, and serving HTTP or HTTPS until the
// context ends.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// ShutdownGrace bounds how long Serve waits for in-flight requests.
const ShutdownGrace = 5 * time.Second

// Logger returns a JSON logger on stderr whose records name the service.
func Logger(service string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", service)
}

// Serve listens on srv.Addr and serves until ctx is done, then shuts down
// gracefully. If srv.TLSConfig is set it serves HTTPS with it (the
// certificate comes from the configuration's GetCertificate).
func Serve(ctx context.Context, srv *http.Server, log *slog.Logger) error {
	lis, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return ServeListener(ctx, srv, lis, log)
}

// ServeListener is Serve on an existing listener, which it closes.
func ServeListener(ctx context.Context, srv *http.Server, lis net.Listener, log *slog.Logger) error {
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(lis, "", "")
		} else {
			errc <- srv.Serve(lis)
		}
	}()
	log.Info("serving", "addr", lis.Addr().String(), "tls", srv.TLSConfig != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// JSON writes v as a JSON response with the given status.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error writes {"error": msg} with the given status.
func Error(w http.ResponseWriter, status int, msg string) {
	JSON(w, status, map[string]string{"error": msg})
}

// Health answers GET /health with {"status": "<service> is healthy"}.
func Health(service string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		JSON(w, http.StatusOK, map[string]string{"status": service + " is healthy"})
	}
}
