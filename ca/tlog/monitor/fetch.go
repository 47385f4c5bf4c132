package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// Default limits.
const (
	DefaultMaxCheckpoint  = 64 << 10
	DefaultMaxBundle      = 8 << 20
	DefaultRequestTimeout = 15 * time.Second
)

// Limits bounds what the monitor reads from the server.
type Limits struct {
	// MaxCheckpoint is the largest checkpoint accepted, in bytes
	// (0: DefaultMaxCheckpoint).
	MaxCheckpoint int64
	// MaxBundle is the largest entry bundle accepted, in bytes
	// (0: DefaultMaxBundle). A tile is always exactly its width times 32.
	MaxBundle int64
	// Request bounds one HTTP request, body included
	// (0: DefaultRequestTimeout).
	Request time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxCheckpoint <= 0 {
		l.MaxCheckpoint = DefaultMaxCheckpoint
	}
	if l.MaxBundle <= 0 {
		l.MaxBundle = DefaultMaxBundle
	}
	if l.Request <= 0 {
		l.Request = DefaultRequestTimeout
	}
	return l
}

// fetcher reads resources under the log's URL prefix.
type fetcher struct {
	base   *url.URL
	client *http.Client
	limits Limits
}

// get fetches path (relative to the prefix), refusing a body over max
// bytes. A 410 answer is errGone.
func (f *fetcher) get(ctx context.Context, path string, max int64) ([]byte, error) {
	u := f.base.JoinPath(path)
	rctx, cancel := context.WithTimeout(ctx, f.limits.Request)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, path, err)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, f.failed(ctx, rctx, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(path, resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, f.failed(ctx, rctx, path, err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("%w: %s: the server sent more than %d bytes; refusing it", ErrLimit, path, max)
	}
	return body, nil
}

// failed classifies a transport error: the caller's context ending, this
// request's time limit, or an unreachable server.
func (f *fetcher) failed(ctx, rctx context.Context, path string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("monitor: reading %s: %w", path, context.Cause(ctx))
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%w: %s: the server did not answer within %s", ErrLimit, path, f.limits.Request)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, path, err)
}

// statusError describes a non-200 answer, quoting the start of its body.
func statusError(path string, resp *http.Response) error {
	if resp.StatusCode == http.StatusGone {
		return fmt.Errorf("%w: %s", errGone, path)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	msg := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.TrimSpace(string(b)))
	return fmt.Errorf("%w: %s: HTTP %d %q", ErrUnavailable, path, resp.StatusCode, msg)
}
