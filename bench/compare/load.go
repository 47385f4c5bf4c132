package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/castellan-dev/castellan/agent/client"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// side is one CA under test, ready to issue to an attested agent.
type side interface {
	name() string
	// issue obtains one SVID per CSR in one call.
	issue(ctx context.Context, csrs [][]byte) error
	server() *process
}

// cell is one kind of work: calls of batch CSRs from callers goroutines
// sharing the agent's connection.
type cell struct {
	label          string
	batch, callers int
}

var cells = []cell{
	{"batch of 50, 4 callers", 50, 4},
	{"one CSR per call, 1 caller", 1, 1},
	{"one CSR per call, 8 callers", 1, 8},
	{"one CSR per call, 32 callers", 1, 32},
}

// result is one side's measurement of one cell.
type result struct {
	svids   int
	elapsed time.Duration
	p50     time.Duration
	cpu     time.Duration // the server process's
}

func (r result) rate() float64 { return float64(r.svids) / r.elapsed.Seconds() }

// cpuPer1000 is the server's CPU in ms per 1,000 SVIDs.
func (r result) cpuPer1000() float64 {
	return float64(r.cpu.Microseconds()) / float64(r.svids)
}

// measure runs c against s for a second of warm-up, then for d, and
// returns what the second run measured.
func measure(ctx context.Context, s side, c cell, csrs [][]byte, d time.Duration) (result, error) {
	if _, err := load(ctx, s, c, csrs, time.Second); err != nil {
		return result{}, err
	}
	cpu0, err := s.server().cpu()
	if err != nil {
		return result{}, err
	}
	r, err := load(ctx, s, c, csrs, d)
	if err != nil {
		return result{}, err
	}
	cpu1, err := s.server().cpu()
	r.cpu = cpu1 - cpu0
	return r, err
}

// load sends calls from c.callers goroutines until d has passed.
func load(ctx context.Context, s side, c cell, csrs [][]byte, d time.Duration) (result, error) {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		lats  []time.Duration
		first error
	)
	start := time.Now()
	deadline := start.Add(d)
	for range c.callers {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(deadline) {
				at := int(next.Add(1)) * c.batch % len(csrs)
				if at+c.batch > len(csrs) {
					at = 0
				}
				t := time.Now()
				if err := s.issue(ctx, csrs[at:at+c.batch]); err != nil {
					mu.Lock()
					first = cmpErr(first, fmt.Errorf("%s, %s: %w", s.name(), c.label, err))
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if first != nil {
		return result{}, first
	}
	slices.Sort(lats)
	r := result{svids: len(lats) * c.batch, elapsed: time.Since(start)}
	if len(lats) > 0 {
		r.p50 = lats[len(lats)/2]
	}
	return r, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// workloadCSRs makes n P-256 CSRs for id (SPIRE reads only their keys).
func workloadCSRs(id spiffeid.ID, n int) ([][]byte, error) {
	out := make([][]byte, n)
	for i := range out {
		csr, err := workloadCSR(id)
		if err != nil {
			return nil, err
		}
		out[i] = csr
	}
	return out, nil
}

// workloadCSR makes a P-256 CSR for id, as the Castellan agent does.
func workloadCSR(id spiffeid.ID) ([]byte, error) {
	key, err := client.NewKey()
	if err != nil {
		return nil, err
	}
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
}

func concat(chain [][]byte) []byte {
	var out []byte
	for _, c := range chain {
		out = append(out, c...)
	}
	return out
}

func mustPKCS8(key crypto.Signer) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	return b
}
