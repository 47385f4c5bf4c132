package manager

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestNewSVIDMustChainToTheCurrentBundle: the manager keeps a new SVID
// only if it chains to the trust bundle it holds at that moment: an SVID
// of another CA of the same trust domain is refused, and after the bundle
// changes to that CA's, SVIDs of the first CA (whose intermediate the
// manager had verified and remembered) are refused and the other's kept.
func TestNewSVIDMustChainToTheCurrentBundle(t *testing.T) {
	first, second := catest.New(t, td), catest.New(t, td)
	c, err := cache.Open(filepath.Join(t.TempDir(), "cache.db"), cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := New(Config{CA: unusedCA{}, Cache: c, Store: state.NewStore(), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/ns/default/sa/w")
	m.ids["w"] = &identity{entry: upstream.Entry{ID: "w", SPIFFEID: id}, rec: cache.Record{EntryID: "w"}}
	record := func(svid *x509svid.SVID) error {
		_, err := m.record("w", upstream.Signed{SVID: svid}, time.Now())
		return err
	}
	m.setBundle(first.Bundle())
	for range 2 { // the second time from the remembered intermediate
		if err := record(first.Issue(t, id, time.Hour)); err != nil {
			t.Fatalf("SVID of the bundle's CA refused: %v", err)
		}
		if err := record(second.Issue(t, id, time.Hour)); err == nil || !strings.Contains(err.Error(), "trust bundle rejects") {
			t.Fatalf("SVID of another CA: %v, want refused by the trust bundle", err)
		}
	}
	m.setBundle(second.Bundle())
	if err := record(first.Issue(t, id, time.Hour)); err == nil || !strings.Contains(err.Error(), "trust bundle rejects") {
		t.Fatalf("SVID of the CA no longer in the bundle: %v, want refused", err)
	}
	if err := record(second.Issue(t, id, time.Hour)); err != nil {
		t.Fatalf("SVID of the new bundle's CA refused: %v", err)
	}
}
