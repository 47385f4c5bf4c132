package witness_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/witness"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeWitness is an httptest witness on 127.0.0.1 whose answers a test
// scripts; it records the request bodies it got.
type fakeWitness struct {
	srv    *httptest.Server
	c      *cosigner
	mu     sync.Mutex
	bodies []string
	answer func(n int, body []byte, w http.ResponseWriter)
}

func newFakeWitness(t *testing.T, answer func(n int, body []byte, w http.ResponseWriter)) *fakeWitness {
	t.Helper()
	f := &fakeWitness{c: newCosigner(t, "fake.test/w"), answer: answer}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/add-checkpoint" {
			t.Errorf("fake witness: %s %s, want POST /add-checkpoint", r.Method, r.URL.Path)
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		f.mu.Lock()
		f.bodies = append(f.bodies, string(b))
		n := len(f.bodies)
		f.mu.Unlock()
		f.answer(n, b, w)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeWitness) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bodies...)
}

// checkpointOf returns the checkpoint in an add-checkpoint body.
func checkpointOf(body []byte) []byte {
	_, cp, _ := bytes.Cut(body, []byte("\n\n"))
	return cp
}

// fakeNow is the fixed clock of the hostile tests.
var fakeNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// submitToFake submits a 4-entry log's checkpoint to f under a 1-of-1
// policy and returns the result.
func submitToFake(t *testing.T, f *fakeWitness, cfg witness.ClientConfig) ([]byte, error) {
	t.Helper()
	lg := newTestLog(t, newLogKey(t, testOrigin), "x").grow(4)
	p := policy(t, 1, witnessSpec{"w1", f.srv.URL, f.c})
	cfg.Clock = clocktest.NewClock(fakeNow)
	return witness.New(p, cfg).Submit(testContext(t), lg.checkpoint(t), 0, lg.proof)
}

// TestSubmitRefusesHostileWitnessAnswers: a cosignature is kept only if
// it is by the witness's key, over exactly the submitted checkpoint, with
// a timestamp near the clock, in a bounded, well-formed answer.
func TestSubmitRefusesHostileWitnessAnswers(t *testing.T) {
	other := newCosigner(t, "fake.test/w")    // same name, another key
	stranger := newCosigner(t, "evil.test/w") // another name
	for _, tc := range []struct {
		name   string
		answer func(f *fakeWitness, body []byte, w http.ResponseWriter)
		want   string
	}{
		{"cosignature by a key of another name", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			io.WriteString(w, stranger.line(noteText(t, checkpointOf(body)), fakeNow))
		}, "no cosignature by the witness key fake.test/w"},
		{"same key name and id, another private key", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			forged := *other
			forged.id = f.c.id
			io.WriteString(w, forged.line(noteText(t, checkpointOf(body)), fakeNow))
		}, "does not verify over this checkpoint"},
		{"cosignature over another checkpoint", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			fork := newTestLog(t, newLogKey(t, testOrigin), "fork").grow(4)
			io.WriteString(w, f.c.line(noteText(t, fork.checkpoint(t)), fakeNow))
		}, "does not verify over this checkpoint"},
		{"cosignature over an extended text", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			ext := append(noteText(t, checkpointOf(body)), "extension\n"...)
			io.WriteString(w, "extension\n\n"+f.c.line(ext, fakeNow))
		}, "not a signature line"},
		{"huge body", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			line := f.c.line(noteText(t, checkpointOf(body)), fakeNow)
			for range (8 << 20) / len(line) {
				if _, err := io.WriteString(w, line); err != nil {
					return // the client hung up, as it should
				}
			}
		}, "larger than 65536 bytes"},
		{"replayed old cosignature", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			io.WriteString(w, f.c.line(noteText(t, checkpointOf(body)), fakeNow.Add(-time.Hour)))
		}, "more than 5m0s from now"},
		{"cosignature from the future", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			io.WriteString(w, f.c.line(noteText(t, checkpointOf(body)), fakeNow.Add(time.Hour)))
		}, "more than 5m0s from now"},
		{"empty 200", func(f *fakeWitness, body []byte, w http.ResponseWriter) {}, "not newline-terminated"},
		{"garbage", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			io.WriteString(w, "— fake.test/w !!!notbase64\n")
		}, "not a well-formed signed note"},
		{"truncated signature", func(f *fakeWitness, body []byte, w http.ResponseWriter) {
			l := f.c.line(noteText(t, checkpointOf(body)), fakeNow)
			name, b64, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(l, "— "), "\n"), " ")
			raw, _ := base64.StdEncoding.DecodeString(b64)
			fmt.Fprintf(w, "— %s %s\n", name, base64.StdEncoding.EncodeToString(raw[:40]))
		}, "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f *fakeWitness
			f = newFakeWitness(t, func(_ int, body []byte, w http.ResponseWriter) { tc.answer(f, body, w) })
			reg := prometheus.NewRegistry()
			got, err := submitToFake(t, f, witness.ClientConfig{Registry: reg})
			if got != nil {
				t.Fatalf("accepted:\n%s", got)
			}
			if !errors.Is(err, witness.ErrBadResponse) {
				t.Fatalf("error %v; want ErrBadResponse", err)
			}
			mustContain(t, err, "w1", tc.want)
			if n := metricValue(t, reg, "castellan_witness_submissions_total", "bad_response", "w1"); n != 1 {
				t.Fatalf("bad_response submissions = %v, want 1", n)
			}
		})
	}
}

// TestSubmitKeepsOnlyTheWitnessLine: an answer with the witness's valid
// cosignature and lines by other keys yields the checkpoint with the
// witness's line alone appended.
func TestSubmitKeepsOnlyTheWitnessLine(t *testing.T) {
	stranger := newCosigner(t, "evil.test/w")
	var f *fakeWitness
	f = newFakeWitness(t, func(_ int, body []byte, w http.ResponseWriter) {
		text := noteText(t, checkpointOf(body))
		io.WriteString(w, stranger.line(text, fakeNow)+f.c.line(text, fakeNow))
	})
	got, err := submitToFake(t, f, witness.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(got), "evil.test") || strings.Count(string(got), "— fake.test/w ") != 1 {
		t.Fatalf("cosigned checkpoint:\n%s", got)
	}
}

// TestSubmitMapsWitnessRefusals: each tlog-witness status becomes the
// error a caller can act on, naming the witness.
func TestSubmitMapsWitnessRefusals(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   error
		msg    string
	}{
		{http.StatusNotFound, witness.ErrUnknownLog, `configure the witness with origin "castellan.test/ledger"`},
		{http.StatusForbidden, witness.ErrForbidden, "key for this origin differs"},
		{http.StatusUnprocessableEntity, witness.ErrInconsistent, "may have forked"},
		{http.StatusBadRequest, witness.ErrRejected, "400 Bad Request"},
		{http.StatusTemporaryRedirect, witness.ErrRejected, "redirects are not followed"},
		{http.StatusTooManyRequests, witness.ErrUnavailable, "try again later"},
		{http.StatusServiceUnavailable, witness.ErrUnavailable, "try again later"},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			f := newFakeWitness(t, func(_ int, _ []byte, w http.ResponseWriter) {
				if tc.status/100 == 3 {
					w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, "reason\x1b[31m from the witness\n")
			})
			_, err := submitToFake(t, f, witness.ClientConfig{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v; want %v", err, tc.want)
			}
			mustContain(t, err, "w1: ", tc.msg)
			if strings.Contains(err.Error(), "\x1b") {
				t.Fatalf("the witness's control characters reached the error: %q", err)
			}
			if n := len(f.requests()); n != 1 {
				t.Fatalf("%d requests, want 1 (no retry)", n)
			}
		})
	}
}

// TestSubmitRetriesOnceAfterConflict: a 409 carries the witness's size;
// the client resubmits once with the proof from that size, and remembers
// it for the next checkpoint.
func TestSubmitRetriesOnceAfterConflict(t *testing.T) {
	lg := newTestLog(t, newLogKey(t, testOrigin), "x").grow(3)
	var f *fakeWitness
	f = newFakeWitness(t, func(n int, body []byte, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Content-Type", "text/x.tlog.size")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, "3\n")
			return
		}
		io.WriteString(w, f.c.line(noteText(t, checkpointOf(body)), fakeNow))
	})
	p := policy(t, 1, witnessSpec{"w1", f.srv.URL, f.c})
	c := witness.New(p, witness.ClientConfig{Clock: clocktest.NewClock(fakeNow)})
	for range 2 {
		lg.grow(9)
		if _, err := c.Submit(testContext(t), lg.checkpoint(t), 0, lg.proof); err != nil {
			t.Fatal(err)
		}
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (409, retry, next checkpoint)", len(reqs))
	}
	for i, want := range []struct{ old, size uint64 }{{0, 12}, {3, 12}, {12, 21}} {
		var proof string
		if want.old > 0 {
			hashes, err := lg.tree.ConsistencyProof(want.old, want.size)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hashes {
				proof += base64.StdEncoding.EncodeToString(h) + "\n"
			}
		}
		head := fmt.Sprintf("old %d\n%s\n", want.old, proof)
		if !strings.HasPrefix(reqs[i], head) {
			t.Fatalf("request %d starts %q, want %q", i, reqs[i][:min(len(reqs[i]), len(head))], head)
		}
		if !strings.Contains(reqs[i], fmt.Sprintf("\n%s\n%d\n", testOrigin, want.size)) {
			t.Fatalf("request %d does not carry the checkpoint of size %d:\n%s", i, want.size, reqs[i])
		}
	}
}

// TestSubmitConflictAnswers: a witness ahead of the checkpoint, a second
// 409, and malformed 409s end the submission with the right error.
func TestSubmitConflictAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, ctype, body string
		want              error
		msg               string
		requests          int
	}{
		{"witness ahead", "text/x.tlog.size", "99\n", witness.ErrStale, "cosigned size 99, this checkpoint is size 4", 1},
		{"409 twice", "text/x.tlog.size", "2\n", witness.ErrStale, "409 twice", 2},
		{"wrong content type", "text/plain", "2\n", witness.ErrBadResponse, "not text/x.tlog.size", 1},
		{"not a number", "text/x.tlog.size", "lots\n", witness.ErrBadResponse, "not a tree size", 1},
		{"leading zero", "text/x.tlog.size", "02\n", witness.ErrBadResponse, "not a tree size", 1},
		{"no newline", "text/x.tlog.size", "2", witness.ErrBadResponse, "not a tree size", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeWitness(t, func(_ int, _ []byte, w http.ResponseWriter) {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(http.StatusConflict)
				io.WriteString(w, tc.body)
			})
			_, err := submitToFake(t, f, witness.ClientConfig{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v; want %v", err, tc.want)
			}
			mustContain(t, err, tc.msg)
			if n := len(f.requests()); n != tc.requests {
				t.Fatalf("%d requests, want %d", n, tc.requests)
			}
		})
	}
}

// TestSubmitTimesOutASlowWitness: a witness that never answers costs at
// most the request timeout, and is reported unavailable.
func TestSubmitTimesOutASlowWitness(t *testing.T) {
	release := make(chan struct{})
	f := newFakeWitness(t, func(_ int, _ []byte, w http.ResponseWriter) { <-release })
	defer close(release)
	start := time.Now()
	_, err := submitToFake(t, f, witness.ClientConfig{Timeout: 300 * time.Millisecond})
	if !errors.Is(err, witness.ErrUnavailable) {
		t.Fatalf("error %v; want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("submission took %s with a 300ms timeout", d)
	}
}

// TestSubmitRefusesBadInput: a caller's malformed checkpoint or old size,
// a failing or oversized proof are errors before or instead of a request.
func TestSubmitRefusesBadInput(t *testing.T) {
	f := newFakeWitness(t, func(_ int, _ []byte, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/x.tlog.size")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, "2\n")
	})
	p := policy(t, 1, witnessSpec{"w1", f.srv.URL, f.c})
	c := witness.New(p, witness.ClientConfig{})
	lg := newTestLog(t, newLogKey(t, testOrigin), "x").grow(4)
	ctx := testContext(t)
	if _, err := c.Submit(ctx, []byte("not a note"), 0, lg.proof); err == nil {
		t.Fatal("a malformed checkpoint was submitted")
	}
	if _, err := c.Submit(ctx, lg.checkpoint(t), 5, lg.proof); err == nil {
		t.Fatal("old size 5 > 4 was accepted")
	}
	failing := func(uint64, uint64) ([][]byte, error) { return nil, errors.New("disk on fire") }
	_, err := c.Submit(ctx, lg.checkpoint(t), 0, failing)
	mustContain(t, err, "consistency proof from size 2 to 4", "disk on fire")
	huge := func(uint64, uint64) ([][]byte, error) { return make([][]byte, 64), nil }
	_, err = c.Submit(ctx, lg.checkpoint(t), 0, huge)
	mustContain(t, err, "64 hashes, more than 63")
}

// TestSubmitReplacesOldCosignatures: resubmitting an already cosigned
// checkpoint does not duplicate the witness's line.
func TestSubmitReplacesOldCosignatures(t *testing.T) {
	var f *fakeWitness
	f = newFakeWitness(t, func(_ int, body []byte, w http.ResponseWriter) {
		io.WriteString(w, f.c.line(noteText(t, checkpointOf(body)), fakeNow))
	})
	lg := newTestLog(t, newLogKey(t, testOrigin), "x").grow(4)
	p := policy(t, 1, witnessSpec{"w1", f.srv.URL, f.c})
	c := witness.New(p, witness.ClientConfig{Clock: clocktest.NewClock(fakeNow)})
	once, err := c.Submit(testContext(t), lg.checkpoint(t), 0, lg.proof)
	if err != nil {
		t.Fatal(err)
	}
	twice, err := c.Submit(testContext(t), once, 0, lg.proof)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(twice), "— fake.test/w "); n != 1 {
		t.Fatalf("%d lines by the witness:\n%s", n, twice)
	}
	if _, err := p.Verify(twice, testOrigin, lg.verifier, fakeNow); err != nil {
		t.Fatal(err)
	}
}
