package tlog

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// testLog is a real ledger file served by a Handler over a real listener;
// the ledger and the Handler share a manual clock.
type testLog struct {
	l     *ledger.Ledger
	srv   *httptest.Server
	clock *clocktest.Clock
}

func newTestLog(t testing.TB) *testLog {
	t.Helper()
	tl := &testLog{clock: clocktest.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Config{Clock: clocktest.Func(tl.clock.Now), Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tl.l = l
	mux := http.NewServeMux()
	mux.Handle("GET /log/", http.StripPrefix("/log", NewHandler(l, Config{Clock: tl.clock})))
	tl.srv = httptest.NewServer(mux)
	t.Cleanup(func() { tl.srv.Close(); _ = l.Close() })
	return tl
}

// issue appends n issuance events for certificates valid for ttl.
func (tl *testLog) issue(t testing.TB, n int, ttl time.Duration) {
	t.Helper()
	evs := make([]entry.Event, n)
	size := tl.l.Size()
	for i := range evs {
		now := tl.clock.Now()
		evs[i] = entry.Event{Kind: entry.KindIssuance, Serial: fmt.Sprintf("%x", size+uint64(i)+1),
			SPIFFEID: fmt.Sprintf("spiffe://example.org/w/%d", size+uint64(i)), Node: "n1",
			NotBefore: now, NotAfter: now.Add(ttl), CertDER: bytes.Repeat([]byte{byte(i)}, 300)}
	}
	if _, err := tl.l.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
}

func (tl *testLog) get(t *testing.T, path string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(tl.srv.URL + "/log/" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// leafData returns every entry's data, read through the ledger's own
// export path (not the one under test).
func leafData(t *testing.T, l *ledger.Ledger) [][]byte {
	t.Helper()
	var out [][]byte
	err := l.Export(context.Background(), 0, func(lf verifier.Leaf) error {
		out = append(out, lf.Data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// subtreeRoot computes the root of the perfect subtree over leaves
// [from, to) with a compact range, which then holds that one hash.
func subtreeRoot(t *testing.T, leafHashes [][]byte, from, to uint64) []byte {
	t.Helper()
	rf := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(from)
	for _, h := range leafHashes[from:to] {
		if err := r.Append(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.Hashes()) != 1 {
		t.Fatalf("[%d, %d) is not a perfect subtree", from, to)
	}
	return r.Hashes()[0]
}

// Every tile holds the hashes an independent computation gives: leaf
// hashes of the entry data at level 0, roots of 256-leaf subtrees at
// level 1; bundles hold the entry data, length-prefixed.
func TestTilesAndBundlesMatchIndependentHashes(t *testing.T) {
	tl := newTestLog(t)
	tl.issue(t, 700, 24*time.Hour)
	data := leafData(t, tl.l)
	leafHashes := make([][]byte, len(data))
	for i, d := range data {
		leafHashes[i] = rfc6962.DefaultHasher.HashLeaf(d)
	}
	want := func(level uint8, n uint64, w int) []byte {
		var out []byte
		for j := n * 256; j < n*256+uint64(w); j++ {
			if level == 0 {
				out = append(out, leafHashes[j]...)
			} else {
				out = append(out, subtreeRoot(t, leafHashes, j*256, (j+1)*256)...)
			}
		}
		return out
	}
	for _, tc := range []struct {
		path        string
		level       uint8
		n           uint64
		w           int
		cache       string
		wantEntries bool
	}{
		{"tile/0/000", 0, 0, 256, cacheFull, false},
		{"tile/0/001", 0, 1, 256, cacheFull, false},
		{"tile/0/002.p/188", 0, 2, 188, cachePartial, false},
		{"tile/0/002.p/5", 0, 2, 5, cachePartial, false},
		{"tile/0/000.p/3", 0, 0, 3, cachePartial, false},
		{"tile/1/000.p/2", 1, 0, 2, cachePartial, false},
		{"tile/entries/001", 0, 1, 256, cacheFull, true},
		{"tile/entries/002.p/188", 0, 2, 188, cachePartial, true},
	} {
		code, hdr, body := tl.get(t, tc.path)
		if code != http.StatusOK || hdr.Get("Cache-Control") != tc.cache {
			t.Fatalf("GET %s: %d, Cache-Control %q (%s); want 200, %q", tc.path, code, hdr.Get("Cache-Control"), body, tc.cache)
		}
		if !tc.wantEntries {
			if !bytes.Equal(body, want(tc.level, tc.n, tc.w)) {
				t.Errorf("GET %s: %d bytes that differ from the independently computed hashes", tc.path, len(body))
			}
			continue
		}
		var b api.EntryBundle
		if err := b.UnmarshalText(body); err != nil || len(b.Entries) != tc.w {
			t.Fatalf("GET %s: %d entries, %v; want %d", tc.path, len(b.Entries), err, tc.w)
		}
		for i, e := range b.Entries {
			if j := tc.n*256 + uint64(i); !bytes.Equal(rfc6962.DefaultHasher.HashLeaf(e), leafHashes[j]) {
				t.Errorf("GET %s: entry %d does not hash to leaf %d", tc.path, i, j)
			}
		}
	}
}

func TestRefusalsSayWhatIsWrong(t *testing.T) {
	tl := newTestLog(t)
	tl.issue(t, 300, 24*time.Hour)
	for _, tc := range []struct {
		path string
		code int
		says string
	}{
		{"tile/0/001", http.StatusNotFound, "not in the log yet"},      // 300 leaves: tile 1 is partial
		{"tile/0/001.p/45", http.StatusNotFound, "not in the log yet"}, // one beyond the size
		{"tile/0/002.p/1", http.StatusNotFound, "not in the log yet"},
		{"tile/1/000", http.StatusNotFound, "not in the log yet"},
		{"tile/1/000.p/2", http.StatusNotFound, "not in the log yet"},
		{"tile/8/000.p/1", http.StatusNotFound, "beyond any log"},
		{"tile/0/x018/x446/x744/x073/x709/x551/615", http.StatusNotFound, "beyond any log"},
		{"tile/entries/001", http.StatusNotFound, "not in the log yet"},
		{"tile/0/0001", http.StatusBadRequest, "three decimal digits"},
		{"tile/0/000.p/256", http.StatusBadRequest, "partial width"},
		{"tile/64/000", http.StatusBadRequest, "tile level"},
		{"tile/0/x000/001", http.StatusBadRequest, "leading x000"},
		{"tiles/0/000", http.StatusNotFound, "want checkpoint"},
	} {
		code, hdr, body := tl.get(t, tc.path)
		if code != tc.code || !strings.Contains(string(body), tc.says) || hdr.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: %d %q (Cache-Control %q); want %d saying %q, no-store", tc.path, code, body, hdr.Get("Cache-Control"), tc.code, tc.says)
		}
	}
	if code, _, body := tl.get(t, "tile/0/001.p/44"); code != http.StatusOK || len(body) != 44*32 {
		t.Errorf("the last partial tile: %d, %d bytes", code, len(body))
	}
	resp, err := http.Post(tl.srv.URL+"/log/checkpoint", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /log/checkpoint: %d, want 405", resp.StatusCode)
	}
}

// A bundle that holds a pruned entry is 410 Gone; the hash tiles, and so
// every proof, keep working.
func TestPrunedEntriesAreGoneButTilesStillProve(t *testing.T) {
	tl := newTestLog(t)
	tl.issue(t, 10, time.Minute)      // entries 0-9 expire soon
	tl.issue(t, 290, 30*24*time.Hour) // entries 10-299 do not
	before := leafData(t, tl.l)
	tl.clock.Advance(2 * time.Hour) // past NotAfter + the one-hour retention
	if n, err := tl.l.Prune(context.Background()); err != nil || n != 10 {
		t.Fatalf("Prune: %d, %v; want 10", n, err)
	}
	code, _, body := tl.get(t, "tile/entries/000")
	if code != http.StatusGone || !strings.Contains(string(body), "entry 0") {
		t.Fatalf("bundle with pruned entries: %d %q; want 410 naming entry 0", code, body)
	}
	if code, _, body := tl.get(t, "tile/entries/001.p/44"); code != http.StatusOK || !bytes.Contains(body, before[256]) {
		t.Fatalf("bundle without pruned entries: %d", code)
	}
	code, _, tile := tl.get(t, "tile/0/000")
	if code != http.StatusOK || !bytes.Equal(tile[:32], rfc6962.DefaultHasher.HashLeaf(before[0])) {
		t.Fatalf("tile 0/000 after pruning: %d, or its first hash is not leaf 0's", code)
	}
	// The third-party client still proves the pruned entry 3.
	f := tesseraFetcher(t, tl)
	cp := fetchVerified(t, tl, f)
	pb, err := client.NewProofBuilder(context.Background(), cp.Size, f.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pb.InclusionProof(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 3, cp.Size, rfc6962.DefaultHasher.HashLeaf(before[3]), p, cp.Hash); err != nil {
		t.Fatalf("inclusion of a pruned entry: %v", err)
	}
}

func tesseraFetcher(t *testing.T, tl *testLog) *client.HTTPFetcher {
	t.Helper()
	u, err := url.Parse(tl.srv.URL + "/log/")
	if err != nil {
		t.Fatal(err)
	}
	f, err := client.NewHTTPFetcher(u, tl.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type checkpoint struct {
	Size uint64
	Hash []byte
}

func fetchVerified(t *testing.T, tl *testLog, f *client.HTTPFetcher) checkpoint {
	t.Helper()
	v, err := note.NewVerifier(tl.l.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _, err := client.FetchCheckpoint(context.Background(), f.ReadCheckpoint, v, tl.l.Origin())
	if err != nil {
		t.Fatalf("FetchCheckpoint: %v", err)
	}
	return checkpoint{Size: cp.Size, Hash: cp.Hash}
}

// The tessera client alone proves inclusion of entries across full and
// partial tiles, and consistency between two sizes, over a real ledger of
// more than 256 leaves.
func TestTesseraClientProvesInclusionAndConsistency(t *testing.T) {
	ctx := context.Background()
	tl := newTestLog(t)
	tl.issue(t, 300, 24*time.Hour)
	f := tesseraFetcher(t, tl)
	old := fetchVerified(t, tl, f)
	if old.Size != 300 {
		t.Fatalf("checkpoint size %d, want 300", old.Size)
	}
	tl.issue(t, 333, 24*time.Hour)
	tl.clock.Advance(DefaultCheckpointInterval)
	cur := fetchVerified(t, tl, f)
	if cur.Size != 633 {
		t.Fatalf("checkpoint size %d, want 633", cur.Size)
	}
	pb, err := client.NewProofBuilder(ctx, cur.Size, f.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	bundles := map[uint64]api.EntryBundle{}
	for _, i := range []uint64{0, 255, 256, 299, 511, 512, 632} {
		b, ok := bundles[i/256]
		if !ok {
			if b, err = client.GetEntryBundle(ctx, f.ReadEntryBundle, i/256, cur.Size); err != nil {
				t.Fatalf("GetEntryBundle(%d): %v", i/256, err)
			}
			bundles[i/256] = b
		}
		p, err := pb.InclusionProof(ctx, i)
		if err != nil {
			t.Fatalf("InclusionProof(%d): %v", i, err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(b.Entries[i%256])
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cur.Size, leaf, p, cur.Hash); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		e, err := entry.Decode(b.Entries[i%256])
		if err != nil || e.Index != i {
			t.Fatalf("entry %d decodes as index %d, %v", i, e.Index, err)
		}
	}
	p, err := pb.ConsistencyProof(ctx, old.Size, cur.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cur.Size, p, old.Hash, cur.Hash); err != nil {
		t.Fatalf("consistency %d -> %d: %v", old.Size, cur.Size, err)
	}
	// A proof checked against a wrong root fails: the check above can fail.
	bad := append([]byte(nil), cur.Hash...)
	bad[0] ^= 1
	if proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cur.Size, p, old.Hash, bad) == nil {
		t.Fatal("a consistency proof verified against a wrong root")
	}
}

// gatedLog blocks Checkpoint until released, to fill the Handler's slots.
type gatedLog struct {
	Log
	entered chan struct{}
	release chan struct{}
}

func (g *gatedLog) Checkpoint(ctx context.Context) ([]byte, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Log.Checkpoint(ctx)
}

// With every slot taken, a request waits, and gives up with 503 when its
// client goes away; it is served once a slot frees.
func TestRequestsBeyondMaxInFlightWait(t *testing.T) {
	tl := newTestLog(t)
	tl.issue(t, 3, time.Hour)
	g := &gatedLog{Log: tl.l, entered: make(chan struct{}, 1), release: make(chan struct{})}
	h := NewHandler(g, Config{MaxInFlight: 1})
	first := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/checkpoint", nil))
		first <- rec.Code
	}()
	<-g.entered // the only slot is held
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/tile/0/000.p/3", nil).WithContext(ctx))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("request with every slot taken: %d, want 503", rec.Code)
	}
	close(g.release)
	if code := <-first; code != http.StatusOK {
		t.Fatalf("the held request: %d", code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/tile/0/000.p/3", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 96 {
		t.Fatalf("after the slot freed: %d, %d bytes", rec.Code, rec.Body.Len())
	}
}

// The checkpoint is a C2SP tlog-checkpoint note: origin, decimal size,
// base64 root hash, a blank line, and one signature line by the key named
// after the origin. Requests sign a grown log at most once per interval.
func TestCheckpointIsASignedNoteRefreshedAtMostOncePerInterval(t *testing.T) {
	tl := newTestLog(t)
	tl.issue(t, 5, time.Hour)
	code, hdr, body := tl.get(t, "checkpoint")
	if code != http.StatusOK || hdr.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("GET checkpoint: %d %q", code, hdr.Get("Content-Type"))
	}
	lines := strings.Split(string(body), "\n")
	if len(lines) != 6 || lines[0] != tl.l.Origin() || lines[1] != "5" || lines[3] != "" || lines[5] != "" ||
		!strings.HasPrefix(lines[4], "\u2014 "+tl.l.Origin()+" ") {
		t.Fatalf("checkpoint is not origin, size, hash, blank, one signature:\n%s", body)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		t.Fatalf("root hash line %q: %v", lines[2], err)
	}
	f := tesseraFetcher(t, tl)
	if cp := fetchVerified(t, tl, f); cp.Size != 5 || !bytes.Equal(cp.Hash, root) {
		t.Fatalf("verified checkpoint: size %d", cp.Size)
	}
	tl.issue(t, 5, time.Hour)
	if cp := fetchVerified(t, tl, f); cp.Size != 5 {
		t.Fatalf("within the interval: size %d, want the stored checkpoint of size 5", cp.Size)
	}
	tl.clock.Advance(DefaultCheckpointInterval)
	if cp := fetchVerified(t, tl, f); cp.Size != 10 {
		t.Fatalf("after the interval: size %d, want 10", cp.Size)
	}
}

// failingLog fails every read, as a damaged ledger file would.
type failingLog struct{ Log }

func (failingLog) NodeHashes(uint8, uint64, uint64) ([][]byte, error) {
	return nil, fmt.Errorf("ledger: tree node (level 0, index 3) is missing or damaged")
}

// A server-side failure is 500 with a message that names the resource but
// not the internal error, which goes to the server log.
func TestServerFailureIsLoggedNotShown(t *testing.T) {
	tl := newTestLog(t)
	tl.issue(t, 3, time.Hour)
	var logged bytes.Buffer
	h := NewHandler(failingLog{tl.l}, Config{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/tile/0/000.p/3", nil))
	body := rec.Body.String()
	if rec.Code != http.StatusInternalServerError || !strings.Contains(body, "tile/0/000.p/3 could not be read") || strings.Contains(body, "damaged") {
		t.Fatalf("failed read: %d %q", rec.Code, body)
	}
	if !strings.Contains(logged.String(), "index 3) is missing or damaged") {
		t.Fatalf("the server log does not hold the cause: %q", logged.String())
	}
}

// With a witness policy, /checkpoint serves the ledger's witnessed
// checkpoint, cosignature lines included, and 503 before the first one.
func TestCheckpointServesTheWitnessedOne(t *testing.T) {
	tl := newTestLog(t)
	tl.issue(t, 4, time.Hour)
	h := NewHandler(tl.l, Config{Witnessed: tl.l.WitnessedCheckpoint})
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/checkpoint", nil))
		return rec
	}
	if rec := get(); rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" ||
		!strings.Contains(rec.Body.String(), "no checkpoint is cosigned") {
		t.Fatalf("before witnessing: %d %q, want 503 with Retry-After", rec.Code, rec.Body.String())
	}
	cp, err := tl.l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cosigned := append(append([]byte(nil), cp...), "\u2014 w.test/a "+base64.StdEncoding.EncodeToString(make([]byte, 76))+"\n"...)
	if err := tl.l.StoreWitnessedCheckpoint(context.Background(), cosigned); err != nil {
		t.Fatal(err)
	}
	tl.issue(t, 3, time.Hour) // the log grows past the witnessed checkpoint
	if rec := get(); rec.Code != http.StatusOK || rec.Body.String() != string(cosigned) {
		t.Fatalf("after witnessing: %d %q, want the cosigned checkpoint", rec.Code, rec.Body.String())
	}
}
