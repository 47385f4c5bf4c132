package integration_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// revokeTTL is long enough that only the revocation can change the SVID
// during the test.
const revokeTTL = 10 * time.Minute

// revocationDeadline is how soon after `castellanctl certs revoke` the
// workload must hold a new SVID.
const revocationDeadline = 5 * time.Second

// x509Update is one Workload API update and when the test received it.
type x509Update struct {
	at   time.Time
	ctx  *workloadapi.X509Context
	seen []string // serials of every SVID in the update
}

// recordingWatcher keeps every update the go-spiffe client receives.
type recordingWatcher struct {
	mu      sync.Mutex
	updates []x509Update
	notify  chan struct{}
}

func (w *recordingWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	u := x509Update{at: time.Now(), ctx: c}
	for _, s := range c.SVIDs {
		u.seen = append(u.seen, serialOf(s.Certificates[0].SerialNumber))
	}
	w.mu.Lock()
	w.updates = append(w.updates, u)
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *recordingWatcher) OnX509ContextWatchError(error) {}

func (w *recordingWatcher) snapshot() []x509Update {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]x509Update(nil), w.updates...)
}

// serialOf is the ledger's form of a serial: lower-case hex, no leading zeros.
func serialOf(n *big.Int) string { return fmt.Sprintf("%x", n) }

// TestRevokedSVIDIsReplacedWithinFiveSeconds runs the real castellan-server,
// castellan-agent and castellanctl: a workload holding a long-lived SVID
// over the Workload API gets a new one within five seconds of
// `castellanctl certs revoke --reason keyCompromise`, and the agent never
// serves the revoked serial again. The revoked serial is in the CA-signed
// CRL at GET /crl, `certs show` and `certs list` report it revoked, the
// ledger holds the revocation event and still verifies, and the server's
// JSON log records who revoked it.
func TestRevokedSVIDIsReplacedWithinFiveSeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	r := newAgentRig(t)
	srvLog := filepath.Join(t.TempDir(), "server.log")
	r.startServerLogging(srvLog, revokeTTL)
	token := strings.Fields(r.ctlRun("token", "create", "--node", "revoke-node", "--ttl", "10m"))[0]

	// The workload is this test process, identified by its executable's path.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/it/sa/revoke-test")
	r.ctlRun("entry", "create", "--spiffe-id", want.String(), "--node", "revoke-node",
		"--selector", "unix:path:"+self, "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "--ttl", revokeTTL.String())
	r.startAgent(token)
	agentEventually(t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	addr := workloadapi.WithAddr("unix://" + r.sock)
	w := &recordingWatcher{notify: make(chan struct{}, 1)}
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = workloadapi.WatchX509Context(ctx, w, addr)
	}()
	defer func() { cancel(); <-watchDone }()

	// waitFor returns the first update after skip updates that satisfies ok.
	waitFor := func(skip int, within time.Duration, what string, ok func(x509Update) bool) (x509Update, int) {
		t.Helper()
		deadline := time.After(within)
		for {
			ups := w.snapshot()
			for i := skip; i < len(ups); i++ {
				if ok(ups[i]) {
					return ups[i], i
				}
			}
			select {
			case <-w.notify:
			case <-deadline:
				t.Fatalf("timed out after %v waiting for %s\nagent log:\n%s", within, what, r.agentLog.String())
			}
		}
	}

	first, idx := waitFor(0, 30*time.Second, "the first SVID", func(x509Update) bool { return true })
	held := agentVerify(t, first.ctx, want)
	if len(held.Certificates) < 2 {
		t.Fatalf("the SVID chain has %d certificate(s); want the leaf and the intermediate", len(held.Certificates))
	}
	intermediate := held.Certificates[1]
	t.Logf("workload holds serial %s (expires %s)", serialOf(held.Certificates[0].SerialNumber),
		held.Certificates[0].NotAfter.Format(time.RFC3339))

	// Revoke the held SVID with the real castellanctl, again with each
	// replacement, until one serial had a first byte below 0x10 (one in
	// sixteen: its hex form has no leading zero, and agents that compared
	// byte-wise hex never matched it).
	type revocation struct {
		serial      string
		ledgerIndex uint64
	}
	var (
		revs          []revocation
		isRevoked     = map[string]bool{}
		slowest       time.Duration
		shortCovered  bool
		lastReplIdx   int
		current       = held
		currentSerial = serialOf(held.Certificates[0].SerialNumber)
	)
	const minRounds, maxRounds = 3, 96
	for round := 1; round <= maxRounds && (round <= minRounds || !shortCovered); round++ {
		oldSerial, oldKey := currentSerial, current.Certificates[0].PublicKey
		start := time.Now()
		out := r.ctlRun("certs", "revoke", oldSerial, "--reason", "keyCompromise", "-o", "json")
		returned := time.Now()
		var rev struct {
			Serial      string `json:"serial"`
			SPIFFEID    string `json:"spiffe_id"`
			Reason      string `json:"reason"`
			LedgerIndex uint64 `json:"ledger_index"`
		}
		if err := json.Unmarshal([]byte(out), &rev); err != nil || rev.Serial != oldSerial || rev.Reason != "keyCompromise" || rev.SPIFFEID != want.String() {
			t.Fatalf("certs revoke -o json = %s (%v)", out, err)
		}
		revs = append(revs, revocation{oldSerial, rev.LedgerIndex})
		isRevoked[oldSerial] = true
		if len(oldSerial) < 32 {
			shortCovered = true
		}

		// Within five seconds the workload holds a new SVID.
		repl, replIdx := waitFor(idx+1, revocationDeadline+2*time.Second, fmt.Sprintf("a replacement for %s", oldSerial), func(u x509Update) bool {
			d := u.ctx.DefaultSVID()
			return d != nil && !isRevoked[serialOf(d.Certificates[0].SerialNumber)]
		})
		took := repl.at.Sub(start)
		if round <= minRounds || len(oldSerial) < 32 {
			t.Logf("round %d: revoked %s; new SVID %v after starting castellanctl (%v after it returned)",
				round, oldSerial, took, repl.at.Sub(returned))
		}
		slowest = max(slowest, took)
		if took > revocationDeadline {
			t.Fatalf("the new SVID arrived %v after revoking %s; want within %v", took, oldSerial, revocationDeadline)
		}
		current = agentVerify(t, repl.ctx, want)
		currentSerial = serialOf(current.Certificates[0].SerialNumber)
		if k, ok := current.Certificates[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || k.Equal(oldKey) {
			t.Errorf("the replacement SVID reuses the compromised key")
		}
		idx, lastReplIdx = replIdx, replIdx
	}
	t.Logf("%d revocations; slowest revocation to new SVID: %v", len(revs), slowest)
	if !shortCovered {
		t.Logf("no revoked serial began with a byte below 0x10 in %d rounds (chance about 0.2%%)", len(revs))
	}

	// The agent never serves a revoked serial again: not in a later push
	// on the open stream, nor to new clients, in any SVID of the update.
	checkUntil := time.Now().Add(2 * time.Second)
	for time.Now().Before(checkUntil) {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := workloadapi.FetchX509Context(fctx, addr)
		fcancel()
		if err != nil {
			t.Fatalf("fetch after the replacement: %v", err)
		}
		for _, s := range c.SVIDs {
			if got := serialOf(s.Certificates[0].SerialNumber); isRevoked[got] {
				t.Fatalf("a new Workload API client was served the revoked serial %s", got)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, u := range w.snapshot()[lastReplIdx:] {
		for _, s := range u.seen {
			if isRevoked[s] {
				t.Fatalf("update %d after the last replacement still carries the revoked serial %s", lastReplIdx+i, s)
			}
		}
	}

	// The CRL, signed by the intermediate that issued the SVIDs, lists
	// every revoked serial for keyCompromise, and not the current one.
	crl := fetchCRL(t, "http://"+r.srvHTTP+"/crl")
	if err := crl.CheckSignatureFrom(intermediate); err != nil {
		t.Fatalf("the CRL's signature does not verify against the SVID's intermediate: %v", err)
	}
	listed := map[string]int{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[serialOf(e.SerialNumber)] = e.ReasonCode
	}
	for _, rv := range revs {
		code, ok := listed[rv.serial]
		if !ok {
			t.Fatalf("the CRL (%d entries) does not list %s", len(crl.RevokedCertificateEntries), rv.serial)
		}
		if code != 1 { // RFC 5280 keyCompromise
			t.Errorf("CRL reason code for %s = %d, want 1 (keyCompromise)", rv.serial, code)
		}
	}
	if _, ok := listed[currentSerial]; ok || len(listed) != len(revs) {
		t.Errorf("the CRL lists %d serials (current %s listed: %v), want the %d revoked", len(listed), currentSerial, ok, len(revs))
	}
	if !crl.NextUpdate.After(time.Now()) {
		t.Errorf("CRL NextUpdate %v is not in the future", crl.NextUpdate)
	}

	// castellanctl reports them revoked; the current SVID is active.
	type shownCert struct {
		Serial, State string
		Reason        string     `json:"revocation_reason"`
		RevokedAt     *time.Time `json:"revoked_at"`
	}
	for _, rv := range []revocation{revs[0], revs[len(revs)-1]} {
		var shown shownCert
		if err := json.Unmarshal([]byte(r.ctlRun("certs", "show", rv.serial, "-o", "json")), &shown); err != nil {
			t.Fatal(err)
		}
		if shown.Serial != rv.serial || shown.State != "revoked" || shown.Reason != "keyCompromise" || shown.RevokedAt == nil {
			t.Fatalf("certs show %s = %+v, want revoked for keyCompromise", rv.serial, shown)
		}
	}
	var shown shownCert
	if err := json.Unmarshal([]byte(r.ctlRun("certs", "show", currentSerial, "-o", "json")), &shown); err != nil || shown.State != "active" {
		t.Fatalf("certs show %s (the current SVID) = %+v, %v; want active", currentSerial, shown, err)
	}
	var list []struct{ Serial string }
	if err := json.Unmarshal([]byte(r.ctlRun("certs", "list", "--state", "revoked", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != len(revs) {
		t.Fatalf("certs list --state revoked has %d certificates, want %d", len(list), len(revs))
	}
	for _, c := range list {
		if !isRevoked[c.Serial] {
			t.Fatalf("certs list --state revoked lists %s, which was not revoked", c.Serial)
		}
	}

	// The ledger holds each revocation event, and still verifies.
	logged := map[string]uint64{}
	for _, line := range strings.Split(r.ctlRun("ledger", "export"), "\n") {
		var e struct {
			Index        uint64
			Kind, Serial string
			Reason       string
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("ledger export line %q: %v", line, err)
		}
		if e.Kind == "revocation" {
			if e.Reason != "keyCompromise" {
				t.Fatalf("revocation event %+v, want reason keyCompromise", e)
			}
			logged[e.Serial] = e.Index
		}
	}
	for _, rv := range revs {
		if i, ok := logged[rv.serial]; !ok || i != rv.ledgerIndex {
			t.Fatalf("ledger export: revocation of %s at index %d (found %v), want index %d", rv.serial, i, ok, rv.ledgerIndex)
		}
	}
	if v := r.ctlRun("ledger", "verify"); !strings.HasPrefix(v, "OK:") {
		t.Fatalf("ledger verify after the revocations: %s", v)
	}

	// The server's JSON log records each revocation and who made it.
	for _, rv := range revs {
		var line map[string]any
		agentEventually(t, 5*time.Second, "the revocation of "+rv.serial+" in the server's log", func() bool {
			line = findLogLine(t, srvLog, func(m map[string]any) bool {
				return m["msg"] == "certificate revoked" && m["serial"] == rv.serial
			})
			return line != nil
		})
		if line["level"] != "INFO" || line["reason"] != "keyCompromise" || line["spiffe_id"] != want.String() ||
			line["by"] == nil || line["by"] == "" || line["index"] != float64(rv.ledgerIndex) {
			t.Fatalf("server log line for the revocation of %s: %v", rv.serial, line)
		}
	}
}

// startServerLogging starts castellan-server with its JSON log in path.
func (r *agentRig) startServerLogging(path string, ttl time.Duration) {
	r.t.Helper()
	f, err := os.Create(path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = f.Close() })
	cmd := exec.Command(r.server, "--data-dir", r.srvDir, "--listen", r.listen, "--http-listen", r.srvHTTP,
		"--default-ttl", ttl.String())
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.srvCmd = cmd
	r.t.Cleanup(func() { r.stop(cmd) })
	agentEventually(r.t, 20*time.Second, "server admin socket", func() bool {
		_, err := os.Stat(filepath.Join(r.srvDir, "admin.sock"))
		return err == nil
	})
}

func fetchCRL(t *testing.T, url string) *x509.RevocationList {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("GET %s: not a DER CRL (Content-Type %q): %v", url, resp.Header.Get("Content-Type"), err)
	}
	return crl
}

// findLogLine returns the first JSON log line in path that match accepts.
func findLogLine(t *testing.T, path string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && match(m) {
			return m
		}
	}
	return nil
}
