package integration_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
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
