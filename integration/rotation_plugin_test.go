package integration_test

import (
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// activeAuthority returns the active authority listed by r's server.
func (r *agentRig) activeAuthority() (rotAuthority, bool) {
	for _, a := range r.authorities() {
		if a.State == "active" {
			return a, true
		}
	}
	return rotAuthority{}, false
}

// waitActive waits until the authority whose intermediate is inter signs.
func (r *agentRig) waitActive(what, inter string, within time.Duration) rotAuthority {
	r.t.Helper()
	var got rotAuthority
	agentEventually(r.t, within, what, func() bool {
		a, ok := r.activeAuthority()
		got = a
		return ok && a.Intermediate.SHA256 == inter
	})
	return got
}

// TestPluginCARotationWithContinuousMTLS is the rotation test for a
// plug-in CA whose files an operator replaces on disk while two workloads
// talk mTLS continuously (Workload API and SDS): a new intermediate under
// the same root is picked up without a restart; a new root added to
// root-cert.pem is published to both consumers; an intermediate under that
// root written at once is refused until the root has been published for
// the publish delay, then signs; a taint of each previous authority makes
// the agent replace the SVIDs under it; no request fails and no consumer
// sees a leaf before its root.
func TestPluginCARotationWithContinuousMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries for about a minute")
	}
	r := newAgentRig(t)
	ca := writeCACerts(t, t.TempDir())
	startRotatingServer(r, ca.flags()...)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	run := startRotationTraffic(t, r, spiffeid.RequireFromPath(td, "/ns/it/sa/plug-server"), spiffeid.RequireFromPath(td, "/ns/it/sa/plug-client"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", r.agentLog.String())
		}
	})
	first, ok := r.activeAuthority()
	if !ok {
		t.Fatalf("no active authority: %+v", r.authorities())
	}

	// 1. A new intermediate under the same root: picked up within a tick.
	second := r.waitActive("the new intermediate file signing", fingerprint(ca.newIntermediate()), 20*time.Second)
	if second.ID == first.ID || second.Root.SHA256 != first.Root.SHA256 {
		t.Fatalf("after the intermediate file changed: %+v (was %+v)", second, first)
	}
	if a := r.authorityJSON("authority", "taint", first.ID); a.State != "tainted" {
		t.Fatalf("taint %s: %+v", first.ID, a)
	}
	run.replaced(t, "SVIDs replaced under the new intermediate file", second.Intermediate.SHA256)

	// 2. A new root and, at once, an intermediate under it: the root is
	// published at the next tick, and the intermediate under a root not
	// yet published is refused (recorded prepared) until the root has been
	// in the bundle for the publish delay.
	ca.newRoot()
	newRoot := fingerprint(ca.root)
	written := time.Now()
	newInter := fingerprint(ca.newIntermediate())
	agentEventually(t, 15*time.Second, "the new root at both consumers", func() bool {
		return run.wl.hasRoot(newRoot) && run.sds.hasRoot(newRoot)
	})
	third := r.waitActive("the intermediate under the new root signing", newInter, 30*time.Second)
	if time.Since(written) < rotationPublishDelay-500*time.Millisecond {
		t.Errorf("the intermediate under a root published %v ago signed before the publish delay %v", time.Since(written), rotationPublishDelay)
	}
	if third.Root.SHA256 != newRoot {
		t.Fatalf("the active authority's root is %s, want the new root %s", third.Root.SHA256, newRoot)
	}
	if a := r.authorityJSON("authority", "taint", second.ID); a.State != "tainted" {
		t.Fatalf("taint %s: %+v", second.ID, a)
	}
	run.replaced(t, "SVIDs replaced under the new root's intermediate", third.Intermediate.SHA256)

	base := run.tr.ok.Load()
	agentEventually(t, 20*time.Second, "traffic under the new root", func() bool { return run.tr.ok.Load() > base+20 })
	run.stop()
	run.wl.check(t)
	run.sds.check(t)
	if f := run.tr.failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed while the plug-in files were replaced: %v", f, f+run.tr.ok.Load(), run.tr.errs)
	}
	if _, err := os.Stat(r.sock); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d mTLS requests, none failed, across an intermediate file change and a root change", run.tr.ok.Load())
}
