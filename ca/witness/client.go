package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Defaults of a Client.
const (
	// DefaultTimeout bounds one add-checkpoint request, answer included.
	DefaultTimeout = 10 * time.Second
	// maxResponse bounds a witness's answer: a few signature lines.
	maxResponse = 64 << 10
	// maxProofLines is the most consistency proof hashes tlog-witness
	// lets a client send.
	maxProofLines = 63
)

// ProofFunc returns the RFC 6962 consistency proof from the tree of size
// oldSize to the tree of size newSize of the log being witnessed.
type ProofFunc func(oldSize, newSize uint64) ([][]byte, error)

// Client submits a log's checkpoints to the witnesses of a policy over
// C2SP tlog-witness and collects their cosignatures. It remembers, per
// witness, the tree size the witness last cosigned (or reported in a 409),
// and sends the consistency proof from that size. Every answer is treated
// as hostile until verified: bodies are bounded, requests time out, and a
// cosignature is kept only if it verifies under the witness's key over
// exactly the submitted checkpoint, with a timestamp close to the clock.
// Safe for concurrent use; submissions to one witness are serialised.
type Client struct {
	policy  *Policy
	http    *http.Client
	clock   clock.Clock
	skew    time.Duration
	timeout time.Duration
	log     *slog.Logger
	metrics *metrics
	states  []*witnessState // parallel to policy.witnesses
}

// witnessState is what a Client knows of one witness.
type witnessState struct {
	turn  chan struct{} // one submission at a time
	mu    sync.Mutex
	known bool   // size is the witness's, not a guess
	size  uint64 // the tree size the witness last cosigned
}

// ClientConfig holds the settings of a Client; its zero value is the
// default.
type ClientConfig struct {
	// HTTPClient sends the requests (nil: a client bounded by Timeout);
	// its redirects are refused.
	HTTPClient *http.Client
	// Clock is what cosignature timestamps are checked against (nil: the
	// wall clock).
	Clock clock.Clock
	// ClockSkew is how far a fresh cosignature's timestamp may be from
	// Clock, either way (0: ClockSkew).
	ClockSkew time.Duration
	// Timeout bounds each request to a witness (0: DefaultTimeout).
	Timeout time.Duration
	// Logger receives refusals (nil: discard).
	Logger *slog.Logger
	// Registry, when set, receives the Client's metrics.
	Registry *prometheus.Registry
}

func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// New returns a Client for policy p.
func New(p *Policy, cfg ClientConfig) *Client {
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = ClockSkew
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{policy: p, clock: clock.OrSystem(cfg.Clock), skew: cfg.ClockSkew, timeout: cfg.Timeout, log: cfg.Logger}
	if cfg.HTTPClient != nil {
		cp := *cfg.HTTPClient
		cp.CheckRedirect = refuseRedirect
		c.http = &cp
	} else {
		c.http = defaultHTTPClient(c.timeout)
	}
	if cfg.Registry != nil {
		c.metrics = newMetrics(cfg.Registry)
	}
	for range p.Witnesses() {
		c.states = append(c.states, &witnessState{turn: make(chan struct{}, 1)})
	}
	return c
}

// defaultHTTPClient bounds connection setup and headers; the request's
// context bounds the rest.
func defaultHTTPClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSHandshakeTimeout = timeout
	t.ResponseHeaderTimeout = timeout
	t.MaxResponseHeaderBytes = 16 << 10
	return &http.Client{Transport: t, CheckRedirect: refuseRedirect, Timeout: timeout}
}

// Policy returns the Client's policy.
func (c *Client) Policy() *Policy { return c.policy }

// Submit sends checkpoint, a C2SP checkpoint signed by its log, to every
// witness at once and returns it with the verified cosignature lines
// appended (lines already in it by the policy's witness keys are dropped
// first, so a resubmitted checkpoint never carries two). oldSize
// is the tree size to prove consistency from for a witness the Client has
// not heard from yet, e.g. the size of the last checkpoint published as
// witnessed (0 if none); the witness's 409 corrects it, once. proof is
// called with sizes oldSize < newSize of the checkpoint's log. When fewer
// than the quorum cosign, the error is a *QuorumError naming each refusal.
func (c *Client) Submit(ctx context.Context, checkpoint []byte, oldSize uint64, proof ProofFunc) ([]byte, error) {
	text, others, cp, err := splitCheckpoint(checkpoint, c.policy)
	if err != nil {
		return nil, err
	}
	if oldSize > cp.Size {
		return nil, fmt.Errorf("witness: old size %d is larger than the checkpoint's size %d", oldSize, cp.Size)
	}
	sub := &submission{signed: checkpoint, text: text, cp: cp, oldSize: oldSize, proof: proof}
	lines := make([]string, len(c.policy.Witnesses()))
	errs := make([]error, len(c.policy.Witnesses()))
	var wg sync.WaitGroup
	for i := range c.policy.Witnesses() {
		wg.Go(func() { lines[i], errs[i] = c.submitTo(ctx, i, sub) })
	}
	wg.Wait()
	out := bytes.NewBuffer(append([]byte(nil), text...))
	out.WriteByte('\n')
	out.WriteString(others)
	qe := &QuorumError{Size: cp.Size, Policy: c.policy.String(), Quorum: c.policy.Quorum()}
	for i, w := range c.policy.Witnesses() {
		if errs[i] != nil {
			qe.Refusals = append(qe.Refusals, Refusal{Witness: w.Name, Err: errs[i]})
			continue
		}
		qe.Cosigned = append(qe.Cosigned, w.Name)
		out.WriteString(lines[i])
	}
	if len(qe.Cosigned) < c.policy.Quorum() {
		return nil, qe
	}
	return out.Bytes(), nil
}

// submission is one checkpoint being submitted.
type submission struct {
	signed  []byte // the checkpoint as given, with the log's signature
	text    []byte // the checkpoint's note text
	cp      log.Checkpoint
	oldSize uint64
	proof   ProofFunc
}

// splitCheckpoint checks that signed is a well-formed signed note whose
// text is a checkpoint, and returns the text, its signature lines other
// than those by p's witnesses, and the parsed checkpoint.
func splitCheckpoint(signed []byte, p *Policy) ([]byte, string, log.Checkpoint, error) {
	var cp log.Checkpoint
	_, err := note.Open(signed, note.VerifierList())
	var unv *note.UnverifiedNoteError
	if !errors.As(err, &unv) {
		return nil, "", cp, fmt.Errorf("witness: the checkpoint is not a well-formed signed note: %w", err)
	}
	n := unv.Note
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return nil, "", cp, fmt.Errorf("witness: the note is not a checkpoint: %w", err)
	}
	var others bytes.Buffer
	for _, s := range n.UnverifiedSigs {
		if isWitnessKey(p, s.Name, s.Hash) {
			continue
		}
		fmt.Fprintf(&others, "— %s %s\n", s.Name, s.Base64)
	}
	return []byte(n.Text), others.String(), cp, nil
}

// isWitnessKey reports whether (name, id) is one of p's witness keys.
func isWitnessKey(p *Policy, name string, id uint32) bool {
	for _, w := range p.Witnesses() {
		if w.Key.Name() == name && w.Key.KeyHash() == id {
			return true
		}
	}
	return false
}
