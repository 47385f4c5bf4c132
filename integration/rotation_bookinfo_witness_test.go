package integration_test

import (
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"golang.org/x/mod/sumdb/note"
)

// bookinfoWitnessTTL is the SVID lifetime of the enforce test: the agent
// renews every SVID about every 15s, so each side rotates several times
// within the test.
const bookinfoWitnessTTL = 30 * time.Second

// TestBookinfoUnderEnforceAcrossRotations runs Bookinfo (castellan-demo)
// with its CA's issuance log witnessed by a real omniwitness and the agent
// under --log-policy enforce, so that every new SVID is held back until
// its inclusion in a cosigned checkpoint is proven. Under continuous
// traffic, every hop's certificates rotate at least twice, then the CA
// rotates its intermediate and taints the old one, and every hop rotates
// once more under the new intermediate: no request fails, the agent proved
// at least every leaf the traffic saw and refused none, and the log the CA
// serves is cosigned by the witness.
func TestBookinfoUnderEnforceAcrossRotations(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Bookinfo, the real binaries and an omniwitness for about two minutes")
	}
	keyFile := filepath.Join(t.TempDir(), "ledger.key")
	vkey, err := logkey.GenerateKeyFile(keyFile, witnessOrigin)
	if err != nil {
		t.Fatal(err)
	}
	w := startOmni(t, vkey)
	g := startBookinfoRig(t, bookinfoWitnessTTL,
		"--server-arg=--publish-delay="+rotationPublishDelay.String(),
		"--server-arg=--ledger-key-file="+keyFile,
		"--server-arg=--witness="+w.flag("w1"),
		"--agent-arg=--log-policy=enforce",
		"--agent-arg=--log-key="+vkey,
		"--agent-arg=--witness="+w.flag("w1"),
		"--agent-arg=--log-wait=3s")
	r := g.r

	// 1. SVID rotations: three leaves on every side.
	agentEventually(t, 90*time.Second, "every hop side's SVID rotated twice", func() bool { return g.load.minSerials() >= 3 })

	// 2. A CA intermediate rotation, the old one tainted.
	first, ok := r.activeAuthority()
	if !ok {
		t.Fatalf("no active authority: %+v", r.authorities())
	}
	second := r.authorityJSON("authority", "prepare")
	r.activateWhenPublished(second)
	r.authorityJSON("authority", "taint", first.ID)
	g.replaced("Bookinfo under the new intermediate after the taint", second.Intermediate.SHA256)

	// 3. One more SVID rotation on every side, under the new intermediate.
	n := g.load.minSerials()
	agentEventually(t, 60*time.Second, "every hop side's SVID rotated under the new intermediate", func() bool {
		return g.load.minSerials() > n && g.load.allUnder(second.Intermediate.SHA256)
	})
	g.finish()

	// Enforcement was on: the agent proved every leaf the traffic saw
	// (there may be more: leaves no request caught) and refused none.
	leaves := g.load.distinctSerials()
	proven := demoMetric(t, g.d.agentHTTP, `castellan_agent_log_proofs_total{result="proven"}`)
	if proven < leaves {
		t.Errorf("the agent proved %d SVIDs in the witnessed log, fewer than the %d distinct leaves the traffic saw", proven, leaves)
	}
	if refused := demoMetric(t, g.d.agentHTTP, `castellan_agent_log_proofs_total{result="refused"}`); refused != 0 {
		t.Errorf("the agent refused %d SVIDs", refused)
	}
	// The log the CA serves carries the witness's cosignature.
	logKey, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	code, body := httpGet(t, "http://"+g.d.serverHTTP+"/log/checkpoint")
	if code != http.StatusOK {
		t.Fatalf("/log/checkpoint = %d %s", code, body)
	}
	cp, err := w.policy(t).Verify(body, witnessOrigin, logKey, time.Now())
	if err != nil {
		t.Fatalf("/log/checkpoint does not satisfy the witness policy: %v\n%s", err, body)
	}
	t.Logf("%d distinct leaves on the hops, %d proven by the agent; checkpoint of size %d cosigned by %d witness",
		leaves, proven, cp.Checkpoint.Size, len(cp.Cosignatures))
}

// distinctSerials is the number of distinct leaves seen on all sides.
func (l *bookinfoLoad) distinctSerials() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	all := map[string]bool{}
	for _, s := range l.serials {
		for serial := range s {
			all[serial] = true
		}
	}
	return len(all)
}

// demoMetric returns the value of a sample on the /metrics page at addr
// (0 if absent).
func demoMetric(t *testing.T, addr, sample string) int {
	t.Helper()
	code, b := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %s", addr, code, b)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return int(f)
		}
	}
	return 0
}
