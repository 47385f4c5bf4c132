package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestWitnessedLogEnforcedByAgent runs castellan-server witnessed by a
// real omniwitness and a castellan-agent under --log-policy enforce:
// /log/checkpoint serves checkpoints cosigned by the witness; with the
// witness down, the agent's first SVID is held back (nothing is served,
// and the agent says why); once the witness is back, the SVID is served,
// and the checkpoint the agent accepted covers it.
func TestWitnessedLogEnforcedByAgent(t *testing.T) {
	r := newWitnessRig(t)
	w := startOmni(t, r.logVKey)
	r.startServer("--witness", w.flag("w1"))
	cp := r.witnessedCheckpoint(w, 1) // the server's own SVID is entry 0
	if len(cp.Cosignatures) != 1 || cp.Cosignatures[0].Witness != "w1" {
		t.Fatalf("cosignatures %+v, want one by w1", cp.Cosignatures)
	}

	token, id := r.enroll("wit-node", "/ns/wit/sa/enforced")
	w.stop() // nothing new gets witnessed
	r.startAgent(token, r.agentLogFlags("enforce", w)...)
	agentEventually(t, 30*time.Second, "the agent to refuse the unwitnessed SVID", func() bool {
		return strings.Contains(r.agentLog.String(), "refusing an SVID not proven to be in the witnessed issuance log")
	})
	if !strings.Contains(r.agentLog.String(), "holding back the first SVID") {
		t.Fatal("the agent did not say it was holding back the first SVID")
	}
	if s := r.fetchSVID(time.Second); s != nil {
		t.Fatalf("the agent served %s before it was witnessed", s.ID)
	}

	w.start() // the witness is back: the next round cosigns the issuance
	s := r.fetchSVID(90 * time.Second)
	if s == nil || s.ID != id {
		t.Fatalf("no witnessed SVID for %s within 90s", id)
	}
	if got := r.metric(`castellan_agent_log_proofs_total{result="proven"}`); got == "" || got == "0" {
		t.Fatalf("proven proofs = %q, want at least 1", got)
	}
	if got := r.metric("castellan_agent_log_accepted_size"); got == "" || got == "0" {
		t.Fatalf("accepted size = %q", got)
	}
	if code, body := httpGet(t, "http://"+r.srvHTTP+"/log/checkpoint"); code != http.StatusOK || strings.Count(string(body), "\n\u2014 ") != 2 {
		t.Fatalf("/log/checkpoint = %d %q, want the log's signature and one cosignature", code, body)
	}
}

// TestUnloggedCertificateRefusedOrAlarmed puts a fake CA in front of the
// agent: it holds the CA's signing key (a plugged-in intermediate the test
// keeps) and relays everything to the real CA except signing, which it
// does itself without logging, claiming the index of a real issuance. Under enforce the
// agent never serves that certificate; under monitor it serves it and
// raises the alarm (log line and castellan_agent_log_unverified_total).
func TestUnloggedCertificateRefusedOrAlarmed(t *testing.T) {
	r := newWitnessRig(t)
	p := newPluggedCA(t, t.TempDir())
	w := startOmni(t, r.logVKey)
	r.startServer(append(p.flags(), "--witness", w.flag("w1"))...)
	r.witnessedCheckpoint(w, 1)

	for _, policy := range []string{"enforce", "monitor"} {
		t.Run(policy, func(t *testing.T) {
			node := "forged-" + policy
			token, id := r.enroll(node, "/ns/forged/sa/"+policy)
			fake := startFakeCA(t, p, r.listen, node)
			r.agentDir, r.sock = t.TempDir(), filepath.Join(t.TempDir(), "agent.sock")
			r.agentHTTP = freeAddr(t)
			r.agentServer = fake.addr
			r.startAgent(token, r.agentLogFlags(policy, w)...)
			defer stopCmd(r.agentCmd)
			switch policy {
			case "enforce":
				agentEventually(t, 30*time.Second, "the agent to refuse the unlogged SVID", func() bool {
					return strings.Contains(r.agentLog.String(), "refusing an SVID not proven to be in the witnessed issuance log")
				})
				if !strings.Contains(r.agentLog.String(), "holds another certificate than the one the CA issued") {
					t.Fatalf("the refusal does not say the claimed log entry holds another certificate")
				}
				if s := r.fetchSVID(time.Second); s != nil {
					t.Fatalf("the agent served the unlogged certificate %s", s.ID)
				}
			case "monitor":
				s := r.fetchSVID(30 * time.Second)
				if s == nil || s.ID != id {
					t.Fatalf("under monitor the agent served nothing for %s", id)
				}
				agentEventually(t, 30*time.Second, "the monitor alarm", func() bool {
					return strings.Contains(r.agentLog.String(), "LOG ALARM") &&
						r.metric("castellan_agent_log_unverified_total") == "1"
				})
			}
		})
	}
}

// TestRewrittenLogGetsNoCosignature witnesses a log, lets an enforcing
// agent accept a checkpoint of it, then rewrites the log's storage while
// the CA is stopped (a new ledger file under the same log key, with other
// entries and more of them). The witness refuses to cosign the rewritten
// log (inconsistent with the tree it cosigned), and the agent refuses the
// certificates the rewritten CA issues, while it keeps serving the one it
// has.
func TestRewrittenLogGetsNoCosignature(t *testing.T) {
	r := newWitnessRig(t)
	w := startOmni(t, r.logVKey)
	r.startServer("--witness", w.flag("w1"))
	token, id := r.enroll("rewrite-node", "/ns/rw/sa/first")
	r.startAgent(token, r.agentLogFlags("enforce", w)...)
	first := r.fetchSVID(60 * time.Second)
	if first == nil || first.ID != id {
		t.Fatalf("no first SVID for %s", id)
	}
	cp := r.witnessedCheckpoint(w, 2)

	stopCmd(r.srvCmd)
	rewriteLedger(t, filepath.Join(r.srvDir, "ledger.db"), int(cp.Checkpoint.Size)+5)
	r.startServer("--witness", w.flag("w1"))
	agentEventually(t, 30*time.Second, "the witness to refuse the rewritten log", func() bool {
		return strings.Contains(r.srvLog.String(), "inconsistent with the tree the witness cosigned")
	})
	if code, body := httpGet(t, "http://"+r.srvHTTP+"/log/checkpoint"); code != http.StatusServiceUnavailable {
		t.Fatalf("/log/checkpoint of the rewritten log = %d %q, want 503 (nothing cosigned)", code, body)
	}

	// A new identity for the node: the rewritten CA issues it, the agent
	// refuses it and keeps serving the first.
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/rw/sa/second")
	r.ctlRun("entry", "create", "--spiffe-id", other.String(), "--node", "rewrite-node", "--selector", "unix:uid:0", "--selector", "unix:gid:12345")
	agentEventually(t, 60*time.Second, "the agent to refuse the rewritten CA's certificate", func() bool {
		return strings.Contains(r.agentLog.String(), "refusing an SVID not proven to be in the witnessed issuance log")
	})
	if s := r.fetchSVID(5 * time.Second); s == nil || s.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("the agent stopped serving its witnessed SVID")
	}
}

// rewriteLedger replaces the ledger file at path with a new one under the
// same log key (path+".key") holding n other entries.
func rewriteLedger(t *testing.T, path string, n int) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(path, ledger.Config{Origin: witnessOrigin})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	now := time.Now()
	evs := make([]entry.Event, n)
	for i := range evs {
		evs[i] = entry.Event{Kind: entry.KindIssuance, Serial: fmt.Sprintf("%x", 0xbad000+i),
			SPIFFEID: "spiffe://cluster.local/rewritten", Node: "nobody", NotBefore: now, NotAfter: now.Add(time.Hour),
			PublicKeySHA256: fmt.Sprintf("%064x", i), CertDER: []byte(fmt.Sprintf("rewritten-%d", i))}
	}
	if _, err := l.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
}

// TestWitnessFirstSVIDLatency records (does not assert) how long a fresh
// agent takes from start to its first served SVID with --log-policy off
// and enforce against the same witnessed CA, and their ratio; run with -v
// to read it. Each agent has its own node and entry.
func TestWitnessFirstSVIDLatency(t *testing.T) {
	r := newWitnessRig(t)
	w := startOmni(t, r.logVKey)
	r.startServer("--witness", w.flag("w1"))
	r.witnessedCheckpoint(w, 1)
	const runs = 3
	took := map[string]time.Duration{}
	for _, policy := range []string{"off", "enforce"} {
		for i := range runs {
			token, id := r.enroll(fmt.Sprintf("lat-%s-%d", policy, i), fmt.Sprintf("/ns/lat/sa/%s-%d", policy, i))
			r.agentDir, r.sock, r.agentHTTP = t.TempDir(), filepath.Join(t.TempDir(), "agent.sock"), freeAddr(t)
			start := time.Now()
			r.startAgent(token, r.agentLogFlags(policy, w)...)
			s := r.fetchSVID(60 * time.Second)
			if s == nil || s.ID != id {
				t.Fatalf("%s: no first SVID", policy)
			}
			took[policy] += time.Since(start)
			stopCmd(r.agentCmd)
		}
	}
	off, enf := took["off"]/runs, took["enforce"]/runs
	t.Logf("first SVID, mean of %d fresh agents: off %s, enforce %s, ratio enforce/off %.2f", runs, off.Round(time.Millisecond), enf.Round(time.Millisecond), float64(enf)/float64(off))
}
