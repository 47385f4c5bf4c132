package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// monitorMatch is one -o json line of castellanctl ledger monitor.
type monitorMatch struct {
	Index    uint64 `json:"index"`
	Kind     string `json:"kind"`
	Serial   string `json:"serial"`
	SPIFFEID string `json:"spiffe_id"`
	Node     string `json:"node"`
}

// runLedgerMonitor runs castellanctl ledger monitor against the rig's
// log and returns its matches, stderr and exit code.
func runLedgerMonitor(t *testing.T, r *witnessRig, state string, args ...string) ([]monitorMatch, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	all := append([]string{"ledger", "monitor", "--log-url", "http://" + r.srvHTTP + "/log/",
		"--log-key", r.logVKey, "--state", state, "-o", "json"}, args...)
	cmd := exec.CommandContext(ctx, r.ctl, all...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	code := 0
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("castellanctl ledger monitor: %v", err)
		}
		code = ee.ExitCode()
	}
	var out []monitorMatch
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if line == "" {
			continue
		}
		var m monitorMatch
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("monitor output line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out, stderr.String(), code
}

// waitLogServes waits until /log/checkpoint covers every entry the ledger
// holds now (the server signs a grown log at most once a second).
func waitLogServes(t *testing.T, ctx context.Context, r *witnessRig, s *caServer) uint64 {
	t.Helper()
	var cp struct {
		Size uint64 `json:"size"`
	}
	if err := json.Unmarshal([]byte(s.ctlRun(t, "ledger", "checkpoint", "--log-key", r.logVKey, "-o", "json")), &cp); err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(r.logVKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := url.Parse("http://" + r.srvHTTP + "/log/")
	if err != nil {
		t.Fatal(err)
	}
	f, err := client.NewHTTPFetcher(root, &http.Client{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tlogCheckpointAtLeast(t, ctx, f, v, witnessOrigin, cp.Size)
	return cp.Size
}

func serialSet(ms []monitorMatch) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Serial)
	}
	sort.Strings(out)
	return out
}

func certSerials(t *testing.T, ids ...[]string) []string {
	t.Helper()
	var out []string
	for _, s := range ids {
		out = append(out, s...)
	}
	sort.Strings(out)
	return out
}

// castellanctl ledger monitor, run against the real castellan-server's
// log over HTTP, finds exactly the certificates of the watched SPIFFE ID
// prefix; a rerun continues from its state and finds only the new ones;
// after the ledger is rewritten under the same key between two runs, it
// reports a fork with exit code 5 and leaves its state alone.
func TestLedgerMonitorFollowsRealLogAndReportsRewrite(t *testing.T) {
	r := newWitnessRig(t)
	r.startServer()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	s := &caServer{dataDir: r.srvDir, ctl: r.ctl, addr: r.listen}
	const payments, shop = "spiffe://cluster.local/ns/payments/sa/api", "spiffe://cluster.local/ns/shop/sa/web"
	payAgent := tlogAgent(t, ctx, s, "pay-node", payments)
	shopAgent := tlogAgent(t, ctx, s, "shop-node", shop)
	serials := func(n int, agent cav1.CertificateAuthorityServiceClient, id string) []string {
		var out []string
		for _, c := range tlogIssue(t, ctx, agent, id, n) {
			out = append(out, c.SerialNumber.Text(16))
		}
		return out
	}
	pay1 := serials(3, payAgent, payments)
	shop1 := serials(4, shopAgent, shop)
	waitLogServes(t, ctx, r, s)

	state := filepath.Join(t.TempDir(), "monitor.state")
	prefix := []string{"--spiffe-id-prefix", "spiffe://cluster.local/ns/payments/"}
	got, errOut, code := runLedgerMonitor(t, r, state, prefix...)
	if code != 0 {
		t.Fatalf("first run: exit %d: %s", code, errOut)
	}
	if fmt.Sprint(serialSet(got)) != fmt.Sprint(certSerials(t, pay1)) {
		t.Fatalf("first run found %v; want exactly the payments certificates %v\n%s", serialSet(got), pay1, errOut)
	}
	for _, m := range got {
		if m.Kind != "issuance" || m.SPIFFEID != payments || m.Node != "pay-node" {
			t.Fatalf("match %+v; want an issuance of %s on pay-node", m, payments)
		}
	}

	byNode, _, code := runLedgerMonitor(t, r, filepath.Join(t.TempDir(), "node.state"), "--node", "shop-node")
	if code != 0 {
		t.Fatalf("--node run: exit %d", code)
	}
	var shopCerts []string
	for _, m := range byNode {
		if m.Node != "shop-node" {
			t.Fatalf("--node shop-node matched %+v", m)
		}
		if m.SPIFFEID == shop {
			shopCerts = append(shopCerts, m.Serial)
		}
	}
	sort.Strings(shopCerts)
	if fmt.Sprint(shopCerts) != fmt.Sprint(certSerials(t, shop1)) {
		t.Fatalf("--node shop-node found workload certificates %v; want %v", shopCerts, shop1)
	}

	pay2 := serials(2, payAgent, payments)
	serials(2, shopAgent, shop)
	size := waitLogServes(t, ctx, r, s)
	got, errOut, code = runLedgerMonitor(t, r, state, prefix...)
	if code != 0 || fmt.Sprint(serialSet(got)) != fmt.Sprint(certSerials(t, pay2)) {
		t.Fatalf("rerun: exit %d, found %v; want only the new payments certificates %v\n%s", code, serialSet(got), pay2, errOut)
	}
	pay3 := followUntilInterrupted(t, r, state, prefix, func() []string { return serials(1, payAgent, payments) })
	saved, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, code := runLedgerMonitor(t, r, state, prefix...); code != 0 || len(got) != 0 {
		t.Fatalf("after following past %v: exit %d, matches %v; want nothing new", pay3, code, got)
	}

	stopCmd(r.srvCmd)
	rewriteLedger(t, filepath.Join(r.srvDir, "ledger.db"), int(size)+5)
	r.startServer()
	got, errOut, code = runLedgerMonitor(t, r, state, prefix...)
	if code != 5 || !strings.Contains(errOut, "LOG FORK OR ROLLBACK") || !strings.Contains(errOut, "does not extend the saved tree") {
		t.Fatalf("rewritten log: exit %d, %d matches, stderr %q; want exit 5 and a fork", code, len(got), errOut)
	}
	t.Logf("rewritten log: %s", strings.TrimSpace(errOut))
	if now, err := os.ReadFile(state); err != nil || !bytes.Equal(now, saved) {
		t.Fatalf("the state changed after a fork was reported (%v)", err)
	}
}

// followUntilInterrupted runs ledger monitor --follow, issues with issue
// once it runs, waits for exactly those certificates to be printed, then
// interrupts it (SIGINT) and checks that it exits 0.
func followUntilInterrupted(t *testing.T, r *witnessRig, state string, filter []string, issue func() []string) []string {
	t.Helper()
	args := append([]string{"ledger", "monitor", "--log-url", "http://" + r.srvHTTP + "/log/", "--log-key", r.logVKey,
		"--state", state, "-o", "json", "--follow", "--interval", "200ms"}, filter...)
	cmd := exec.Command(r.ctl, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stopCmd(cmd)
	lines := make(chan monitorMatch, 16)
	go func() {
		defer close(lines)
		dec := json.NewDecoder(stdout)
		for {
			var m monitorMatch
			if dec.Decode(&m) != nil {
				return
			}
			lines <- m
		}
	}()
	want := issue()
	var got []string
	deadline := time.After(30 * time.Second)
	for len(got) < len(want) {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatalf("ledger monitor --follow stopped: %s", stderr.String())
			}
			got = append(got, m.Serial)
		case <-deadline:
			t.Fatalf("after 30s ledger monitor --follow printed %v; want %v\n%s", got, want, stderr.String())
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("--follow printed %v; want %v", got, want)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for range lines { // drain until stdout closes
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ledger monitor --follow after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ledger monitor --follow did not stop within 10s of SIGINT")
	}
	return want
}

// With a witness policy, ledger monitor accepts the real CA's checkpoint
// only as cosigned by a real omniwitness: the policy of that witness
// passes and finds the certificates; a policy naming another witness is
// refused with exit code 3 and no state.
func TestLedgerMonitorChecksWitnessCosignatures(t *testing.T) {
	r := newWitnessRig(t)
	w := startOmni(t, r.logVKey)
	r.startServer("--witness", w.flag("w1"))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s := &caServer{dataDir: r.srvDir, ctl: r.ctl, addr: r.listen}
	const payments = "spiffe://cluster.local/ns/payments/sa/api"
	var want []string
	for _, c := range tlogIssue(t, ctx, tlogAgent(t, ctx, s, "wit-node", payments), payments, 2) {
		want = append(want, c.SerialNumber.Text(16))
	}
	var cp struct {
		Size uint64 `json:"size"`
	}
	if err := json.Unmarshal([]byte(s.ctlRun(t, "ledger", "checkpoint", "--log-key", r.logVKey, "-o", "json")), &cp); err != nil {
		t.Fatal(err)
	}
	r.witnessedCheckpoint(w, cp.Size)

	got, errOut, code := runLedgerMonitor(t, r, filepath.Join(t.TempDir(), "state"), "--witness", w.flag("w1"),
		"--spiffe-id-prefix", payments)
	if code != 0 || fmt.Sprint(serialSet(got)) != fmt.Sprint(certSerials(t, want)) {
		t.Fatalf("witnessed: exit %d, found %v; want %v\n%s", code, serialSet(got), want, errOut)
	}

	_, otherKey := witnessKey(t, "witness.test/other")
	state := filepath.Join(t.TempDir(), "state")
	_, errOut, code = runLedgerMonitor(t, r, state, "--witness", "w9=http://127.0.0.1:9+"+otherKey)
	if code != 3 || !strings.Contains(errOut, "has 0 of the 1 witness cosignatures") {
		t.Fatalf("another witness's policy: exit %d, %q; want 3 and the missing cosignature", code, errOut)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused pass left a state: %v", err)
	}
}
