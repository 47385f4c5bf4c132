package monitor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/tlog/logentry"
	"github.com/castellan-dev/castellan/ca/tlog/monitor"
	"github.com/castellan-dev/castellan/ca/tlog/monitor/state"
)

const (
	payments = "spiffe://example.org/ns/payments/sa/api"
	shop     = "spiffe://example.org/ns/shop/sa/web"
)

// A first pass finds exactly the matching certificates among hundreds of
// entries spread over several bundles; a rerun from the saved state
// verifies and reports only what was appended since.
func TestMonitorFindsMatchesAndContinuesFromState(t *testing.T) {
	r := newRig(t)
	r.noise(r.log, 3, "node-a")
	want := r.issue(r.log, 5, payments, "node-a")
	r.issue(r.log, 290, shop, "node-b") // crosses the first bundle
	want = append(want, r.issue(r.log, 2, payments+"-admin", "node-b")...)
	m := r.monitor(monitor.Filter{SPIFFEIDPrefixes: []string{"spiffe://example.org/ns/payments/"}})
	path := statePath(t)

	res, err := runOnce(t, m, path)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 0 || res.To != 300 || !equalStrings(serialsOf(res.Matches), want) {
		t.Fatalf("first pass: [%d, %d) matches %v; want [0, 300) and %v", res.From, res.To, serialsOf(res.Matches), want)
	}
	st, err := state.Load(path, r.verifier, "")
	if err != nil || st.Checkpoint.Size != 300 {
		t.Fatalf("saved state: %v %v; want the checkpoint of size 300", st, err)
	}

	r.issue(r.log, 100, shop, "node-b")
	more := r.issue(r.log, 3, payments, "node-c")
	res, err = runOnce(t, m, path)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 300 || res.To != 403 || !equalStrings(serialsOf(res.Matches), more) {
		t.Fatalf("second pass: [%d, %d) matches %v; want [300, 403) and %v", res.From, res.To, serialsOf(res.Matches), more)
	}
	res, err = runOnce(t, m, path)
	if err != nil || res.From != 403 || len(res.Matches) != 0 {
		t.Fatalf("third pass on an unchanged log: %v; want nothing new", err)
	}
}

// Filters by node and SPIFFE ID prefix combine; the entries decode to the
// same values the ledger's own decoder reads.
func TestMonitorFiltersByNodeAndDecodesLikeTheLedger(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 4, payments, "node-a")
	wantB := r.issue(r.log, 2, payments, "node-b")
	r.issue(r.log, 3, shop, "node-b")
	r.appendTo(r.log, entry.Event{Kind: entry.KindRevocation, Serial: wantB[0], SPIFFEID: payments, Node: "node-b", Reason: "keyCompromise"})
	wantB = append(wantB, wantB[0])

	m := r.monitor(monitor.Filter{SPIFFEIDPrefixes: []string{payments}, Nodes: []string{"node-b"}})
	res, err := runOnce(t, m, statePath(t))
	if err != nil {
		t.Fatal(err)
	}
	if !equalStrings(serialsOf(res.Matches), wantB) {
		t.Fatalf("matches %v; want %v", serialsOf(res.Matches), wantB)
	}
	for _, got := range res.Matches {
		want, err := r.log.Entry(context.Background(), got.Index)
		if err != nil {
			t.Fatal(err)
		}
		led, err := entry.Decode(want.Data)
		if err != nil {
			t.Fatal(err)
		}
		if got.Kind != string(led.Kind) || got.Serial != led.Serial || got.SPIFFEID != led.SPIFFEID || got.Node != led.Node ||
			!got.Time.Equal(led.Time) || !got.NotAfter.Equal(led.NotAfter) || got.Reason != led.Reason || string(got.Cert) != string(led.CertDER) {
			t.Errorf("entry %d: monitor decoded %+v, the ledger %+v", got.Index, got, led)
		}
	}
	if last := res.Matches[len(res.Matches)-1]; last.Kind != "revocation" || last.Reason != "keyCompromise" {
		t.Errorf("last match %+v; want the revocation", last)
	}
}

// A log of a thousand entries, followed from the middle of a tile: the
// old tree's nodes come from level-1 tiles, and every level-0 and level-1
// tile of the new entries is checked.
func TestMonitorVerifiesAcrossTileLevels(t *testing.T) {
	r := newRig(t)
	r.noise(r.log, 300, "n")
	m := r.monitor(monitor.Filter{Nodes: []string{"target"}})
	path := statePath(t)
	if _, err := runOnce(t, m, path); err != nil {
		t.Fatal(err)
	}
	r.noise(r.log, 700, "n")
	want := r.issue(r.log, 1, payments, "target")
	r.noise(r.log, 60, "n")
	res, err := runOnce(t, m, path)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 300 || res.To != 1061 || !equalStrings(serialsOf(res.Matches), want) {
		t.Fatalf("[%d, %d) matches %v; want [300, 1061) and %v", res.From, res.To, serialsOf(res.Matches), want)
	}
}

// Following: entries appended while the monitor runs are reported, the
// state follows them, and cancelling the context stops it cleanly.
func TestMonitorFollowReportsNewEntriesUntilCancelled(t *testing.T) {
	r := newRig(t)
	r.issue(r.log, 2, payments, "a")
	m := r.monitor(monitor.Filter{SPIFFEIDPrefixes: []string{payments}})
	path := statePath(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reports := make(chan []logentry.Entry, 16)
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, monitor.RunOptions{StatePath: path, Follow: true, Interval: 20 * time.Millisecond,
			Report: func(es []logentry.Entry) error {
				reports <- append([]logentry.Entry(nil), es...)
				return nil
			}})
	}()
	var got []string
	want := 2
	deadline := time.After(20 * time.Second)
	for len(got) < want {
		select {
		case es := <-reports:
			got = append(got, serialsOf(es)...)
			if want == 2 && len(got) == 2 {
				want = 5
				r.issue(r.log, 3, payments, "b")
			}
		case err := <-done:
			t.Fatalf("Run returned %v while following", err)
		case <-deadline:
			t.Fatalf("after 20s the monitor reported %d of %d matches", len(got), want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop within 10s of cancellation")
	}
	st, err := state.Load(path, r.verifier, "")
	if err != nil || st.Checkpoint.Size != 5 {
		t.Fatalf("state after following: %v %v; want size 5", st, err)
	}
}

// A failing report leaves the state where it was, so the matches are
// reported again by the next run.
func TestMonitorReportFailureKeepsState(t *testing.T) {
	r := newRig(t)
	want := r.issue(r.log, 2, payments, "a")
	m := r.monitor(monitor.Filter{})
	path := statePath(t)
	boom := errors.New("stdout closed")
	err := m.Run(context.Background(), monitor.RunOptions{StatePath: path, Report: func([]logentry.Entry) error { return boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v; want the report's error", err)
	}
	if s := readFile(t, path); s != "" {
		t.Fatalf("state written after a failed report: %q", s)
	}
	res, err := runOnce(t, m, path)
	if err != nil || !equalStrings(serialsOf(res.Matches), want) {
		t.Fatalf("rerun: %v; want %v again", err, want)
	}
}

// A long step is verified and reported chunk by chunk, each chunk proven
// in the signed tree before its matches are handed on; a chunk that does
// not verify stops the step after the earlier chunks' genuine matches,
// with the state kept, and the next run reports them all again.
func TestMonitorVerifiesLongStepsInChunks(t *testing.T) {
	r := newRig(t)
	r.noise(r.log, 10, "n")
	want := r.issue(r.log, 1, payments, "a")
	r.noise(r.log, monitor.ChunkEntries+300, "n")
	want = append(want, r.issue(r.log, 1, payments, "a")...)
	r.noise(r.log, 5, "n")
	m := r.monitor(monitor.Filter{SPIFFEIDPrefixes: []string{payments}})
	path := statePath(t)

	second := fmt.Sprintf("/log/tile/entries/%03d", (monitor.ChunkEntries+311)/256)
	r.setTamper(func(p string, body []byte) []byte {
		if strings.HasPrefix(p, second) {
			return bytes.Replace(body, []byte(`"n"`), []byte(`"m"`), 1)
		}
		return body
	})
	res, err := runOnce(t, m, path)
	if !errors.Is(err, monitor.ErrInvalid) || !equalStrings(serialsOf(res.Matches), want[:1]) {
		t.Fatalf("tampered second chunk: %v, reported %v; want ErrInvalid after the first chunk's %v", err, serialsOf(res.Matches), want[:1])
	}
	if s := readFile(t, path); s != "" {
		t.Fatalf("state saved after a failed step: %q", s)
	}
	r.setTamper(nil)
	res, err = runOnce(t, m, path)
	if err != nil || res.Reports != 2 || !equalStrings(serialsOf(res.Matches), want) || res.Matched != 2 {
		t.Fatalf("untampered: %v, %d reports of %v; want 2 reports of %v", err, res.Reports, serialsOf(res.Matches), want)
	}
}

// Following, a log that is unavailable for a while (503) is retried, and
// its entries are reported once it answers; in one pass, it is an error.
func TestMonitorFollowRetriesUnavailableLog(t *testing.T) {
	r := newRig(t)
	want := r.issue(r.log, 1, payments, "a")
	var mu sync.Mutex
	failures := 3
	r.setStatus(func(p string) int {
		mu.Lock()
		defer mu.Unlock()
		if p == "/log/checkpoint" && failures > 0 {
			failures--
			return http.StatusServiceUnavailable
		}
		return 0
	})
	m := r.monitor(monitor.Filter{})
	path := statePath(t)
	if _, err := runOnce(t, m, path); !errors.Is(err, monitor.ErrUnavailable) || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("one pass against a 503: %v; want ErrUnavailable", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var retries int
	var got []logentry.Entry
	err := m.Run(ctx, monitor.RunOptions{StatePath: path, Follow: true, Interval: 10 * time.Millisecond,
		Retrying: func(error) { retries++ },
		Report: func(es []logentry.Entry) error {
			got = append(got, es...)
			cancel()
			return nil
		}})
	if err != nil || retries != 2 || !equalStrings(serialsOf(got), want) {
		t.Fatalf("following: %v after %d retries, reported %v; want nil after 2 retries and %v", err, retries, serialsOf(got), want)
	}
	if err := m.Run(context.Background(), monitor.RunOptions{StatePath: path, Follow: true}); err == nil {
		t.Fatal("following with no interval was accepted")
	}
}
