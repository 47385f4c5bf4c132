package hop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// Client calls one downstream service and records each call as a Hop.
type Client struct {
	// HTTP makes the calls; for Bookinfo it is an mTLS client.
	HTTP *http.Client
	// BaseURL is the downstream's scheme and authority, e.g.
	// https://127.0.0.1:9081.
	BaseURL string
	// From and To name the calling and called services.
	From, To string
}

// Get fetches path and decodes the JSON body into out. The returned hop
// describes the call even when it failed (with Error set), so a caller can
// render it.
func (c *Client) Get(ctx context.Context, path string, out any) (Hop, error) {
	h := Hop{From: c.From, To: c.To}
	fail := func(err error) (Hop, error) {
		h.Error = err.Error()
		return h, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+path, nil)
	if err != nil {
		return fail(fmt.Errorf("hop: %w", err))
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fail(fmt.Errorf("hop: %s -> %s: %w", c.From, c.To, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fail(fmt.Errorf("hop: %s -> %s: read body: %w", c.From, c.To, err))
	}
	if h, err = FromResponse(c.From, c.To, resp); err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("hop: %s -> %s: GET %s: %s", c.From, c.To, path, resp.Status))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fail(fmt.Errorf("hop: %s -> %s: decode %s: %w", c.From, c.To, path, err))
	}
	return h, nil
}
