package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	iwitness "github.com/castellan-dev/castellan/internal/witness"

	"golang.org/x/mod/sumdb/note"
)

// submitTo submits s to witness i, retrying once after a 409 with the
// size the witness reported, and returns the verified cosignature line.
func (c *Client) submitTo(ctx context.Context, i int, s *submission) (string, error) {
	w, st := c.policy.Witnesses()[i], c.states[i]
	select {
	case st.turn <- struct{}{}:
		defer func() { <-st.turn }()
	case <-ctx.Done():
		return "", fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	start := c.clock.Now()
	line, result, err := c.exchange(ctx, w, st, s)
	c.metrics.observe(w.Name, result, c.clock.Now().Sub(start))
	if err != nil {
		level := slogLevel(err)
		c.log.Log(ctx, level, "witness did not cosign the checkpoint", "witness", w.Name,
			"url", w.URL.String(), "size", s.cp.Size, "error", err.Error())
		return "", err
	}
	c.metrics.cosigned(w.Name, s.cp.Size)
	return line, nil
}

// exchange runs at most two add-checkpoint requests and returns the
// cosignature line, or the metric result and the error.
func (c *Client) exchange(ctx context.Context, w Witness, st *witnessState, s *submission) (string, string, error) {
	old := st.get(s.oldSize)
	if old > s.cp.Size {
		old = 0 // ask the witness its size with a 409
	}
	for attempt := 1; ; attempt++ {
		proof, err := c.proofFor(s, old)
		if err != nil {
			return "", resultError, err
		}
		status, body, err := c.post(ctx, w, requestBody(old, proof, s.signed))
		if errors.Is(err, ErrBadResponse) {
			return "", resultBadResponse, err
		} else if err != nil {
			return "", resultUnavailable, err
		}
		if status != http.StatusConflict {
			line, result, err := c.answer(w, s, status, body)
			if err == nil {
				st.set(s.cp.Size)
			}
			return line, result, err
		}
		size, err := conflictSize(body)
		if err != nil {
			return "", resultBadResponse, err
		}
		st.set(size)
		switch {
		case size > s.cp.Size:
			return "", resultStale, fmt.Errorf("%w: it cosigned size %d, this checkpoint is size %d; submit a newer checkpoint", ErrStale, size, s.cp.Size)
		case attempt > 1:
			return "", resultStale, fmt.Errorf("%w: it answered 409 twice (cosigned size now %d); another submitter is racing this one", ErrStale, size)
		}
		old = size
	}
}

// proofFor returns the consistency proof from old to the checkpoint.
func (c *Client) proofFor(s *submission, old uint64) ([][]byte, error) {
	if old == 0 || old == s.cp.Size {
		return nil, nil
	}
	p, err := s.proof(old, s.cp.Size)
	if err != nil {
		return nil, fmt.Errorf("consistency proof from size %d to %d: %w", old, s.cp.Size, err)
	}
	if len(p) > maxProofLines {
		return nil, fmt.Errorf("consistency proof from size %d to %d has %d hashes, more than %d", old, s.cp.Size, len(p), maxProofLines)
	}
	return p, nil
}

// requestBody is an add-checkpoint body: the old size line, the proof
// lines, a blank line and the signed checkpoint.
func requestBody(old uint64, proof [][]byte, signed []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.Write(signed)
	return b.Bytes()
}

// post sends one request, bounded by the Client's timeout, and reads at
// most maxResponse bytes of the answer.
func (c *Client) post(ctx context.Context, w Witness, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := strings.TrimSuffix(w.URL.String(), "/") + "/add-checkpoint"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: reading the answer: %w", ErrUnavailable, err)
	}
	if len(b) > maxResponse {
		return 0, nil, fmt.Errorf("%w: the answer (%d) is larger than %d bytes", ErrBadResponse, resp.StatusCode, maxResponse)
	}
	if resp.StatusCode == http.StatusConflict {
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/x.tlog.size" {
			return 0, nil, fmt.Errorf("%w: 409 with Content-Type %q, not text/x.tlog.size", ErrBadResponse, resp.Header.Get("Content-Type"))
		}
	}
	return resp.StatusCode, b, nil
}

// conflictSize parses a 409's body: a decimal tree size and a newline.
func conflictSize(body []byte) (uint64, error) {
	s, ok := strings.CutSuffix(string(body), "\n")
	n, err := strconv.ParseUint(s, 10, 64)
	if !ok || err != nil || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%w: 409 body %q is not a tree size", ErrBadResponse, printable(body))
	}
	return n, nil
}

// answer interprets a non-409 answer: a 200 must carry a valid
// cosignature of s by w's key.
func (c *Client) answer(w Witness, s *submission, status int, body []byte) (string, string, error) {
	reason := func(e error, what string) error {
		return fmt.Errorf("%w (%d %s): %s%s", e, status, http.StatusText(status), what, detail(body))
	}
	switch {
	case status == http.StatusOK:
		line, err := c.verifyAnswer(w, s, body)
		if err != nil {
			return "", resultBadResponse, err
		}
		return line, resultCosigned, nil
	case status == http.StatusUnprocessableEntity:
		return "", resultInconsistent, reason(ErrInconsistent, "the consistency proof does not verify or the root hash differs at the same size: the log may have forked or been rewritten")
	case status == http.StatusNotFound:
		return "", resultRefused, reason(ErrUnknownLog, fmt.Sprintf("configure the witness with origin %q and the log's key", s.cp.Origin))
	case status == http.StatusForbidden:
		return "", resultRefused, reason(ErrForbidden, "the witness's key for this origin differs from the log's signing key")
	case status >= 300 && status < 400:
		return "", resultRefused, reason(ErrRejected, "redirects are not followed; configure the witness's final URL")
	case status == http.StatusTooManyRequests || status >= 500:
		return "", resultUnavailable, reason(ErrUnavailable, fmt.Sprintf("try again later; if it lasts, check that the witness is configured for origin %q with the log's verifier key", s.cp.Origin))
	}
	return "", resultRefused, reason(ErrRejected, "")
}

// verifyAnswer checks that body is signature lines holding a cosignature
// of s's checkpoint text by w's key, timestamped within the skew of now,
// and returns that line. Lines by other keys are ignored.
func (c *Client) verifyAnswer(w Witness, s *submission, body []byte) (string, error) {
	if len(body) == 0 || body[len(body)-1] != '\n' {
		return "", fmt.Errorf("%w: the answer is not newline-terminated signature lines", ErrBadResponse)
	}
	for _, l := range bytes.Split(body[:len(body)-1], []byte("\n")) {
		if !bytes.HasPrefix(l, []byte("— ")) {
			return "", fmt.Errorf("%w: the answer has a line that is not a signature line: %q", ErrBadResponse, printable(l))
		}
	}
	signed := append(append(append([]byte(nil), s.text...), '\n'), body...)
	n, err := note.Open(signed, note.VerifierList(w.Key))
	var unv *note.UnverifiedNoteError
	switch {
	case errors.As(err, &unv):
		return "", fmt.Errorf("%w: no cosignature by the witness key %s+%08x in the answer (%d signature lines by other keys ignored)",
			ErrBadResponse, w.Key.Name(), w.Key.KeyHash(), len(unv.Note.UnverifiedSigs))
	case err != nil:
		return "", fmt.Errorf("%w: %w", ErrBadResponse, iwitness.DescribeOpenError(err))
	case n.Text != string(s.text):
		return "", fmt.Errorf("%w: the cosignature is over another text than the checkpoint", ErrBadResponse)
	}
	sig := n.Sigs[0]
	t, err := iwitness.SignatureTime(sig)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	if now := c.clock.Now(); t.Before(now.Add(-c.skew)) || t.After(now.Add(c.skew)) {
		return "", fmt.Errorf("%w: the cosignature is dated %s, more than %s from now (%s): a replayed cosignature or a witness clock out of step",
			ErrBadResponse, t.UTC().Format(time.RFC3339), c.skew, now.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("— %s %s\n", sig.Name, sig.Base64), nil
}

// detail returns ": <the body's first line>" for an error answer, bounded
// and with unprintable characters replaced.
func detail(body []byte) string {
	first, _, _ := bytes.Cut(body, []byte("\n"))
	if len(first) == 0 {
		return ""
	}
	return ": witness says " + strconv.Quote(printable(first))
}

// printable bounds b to 200 bytes and replaces what a terminal or a log
// must not receive.
func printable(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, string(b))
}

func (st *witnessState) get(guess uint64) uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.known {
		return st.size
	}
	return guess
}

func (st *witnessState) set(size uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.known, st.size = true, size
}
