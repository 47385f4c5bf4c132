package integration_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/castellan-dev/castellan/integration/testbin"
)

// bookinfoRecent is how many consecutive observations of one hop side
// must show a new authority before the side counts as replaced: more than
// the two reviews instances productpage alternates between.
const bookinfoRecent = 6

// bookinfoID is the SPIFFE ID castellan-demo registers for a service.
func bookinfoID(service string) spiffeid.ID {
	return spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bookinfo-" + service)
}

// bookinfoRig is Bookinfo run by castellan-demo (the real server, agent
// and four services) under continuous traffic, with the test's own
// consumers of the agent: a Workload API watcher and an Envoy-like SDS
// client, both registered as a second reviews instance, the SDS one also
// calling ratings over mTLS with what SDS gave it. Every consumer update
// goes to a trustLog.
type bookinfoRig struct {
	t      *testing.T
	d      *demoLauncher
	r      *agentRig // castellanctl on the demo's CA
	wl     *trustLog
	wlCur  atomic.Pointer[string] // issuer of the latest Workload API SVID
	sds    *trustLog
	sdsCur atomic.Pointer[sdsMaterial]
	load   *bookinfoLoad
	stop   func() // stops the traffic (also at cleanup)
}

// startBookinfoRig starts castellan-demo with SVID lifetime ttl and the
// extra launcher arguments, the test's consumers and the traffic, and
// returns once requests flow on every path.
func startBookinfoRig(t *testing.T, ttl time.Duration, extra ...string) *bookinfoRig {
	t.Helper()
	d := demoStart(t, ttl, extra...)
	var b testbin.Builder
	t.Cleanup(b.Cleanup)
	g := &bookinfoRig{t: t, d: d, r: &agentRig{t: t, ctl: b.Path(t, "castellanctl"), srvDir: filepath.Join(d.dir, "server")},
		wl: newTrustLog("Workload API"), sds: newTrustLog("SDS"), load: newBookinfoLoad()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("demo logs:\n%s", d.demoLogs())
		}
	})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test process is one more reviews instance: ratings lets it in.
	g.r.ctlRun("entry", "create", "--spiffe-id", bookinfoID("reviews").String(), "--node", "demo-node",
		"--selector", "unix:path:"+exe, "--selector", "unix:uid:"+strconv.Itoa(os.Getuid()))

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	var bg sync.WaitGroup
	t.Cleanup(bg.Wait)
	t.Cleanup(cancel)
	sock := filepath.Join(d.dir, "agent.sock")
	bg.Add(2)
	go func() {
		defer bg.Done()
		_ = workloadapi.WatchX509Context(ctx, bookinfoWL{g}, workloadapi.WithAddr("unix://"+sock))
	}()
	go func() { defer bg.Done(); runSDS(ctx, t, sock, "default", g.sds, &g.sdsCur) }()
	// Both trustLogs hold the first root before any request starts (runSDS
	// stores its material before it logs the update).
	agentEventually(t, 60*time.Second, "the test's SVID over SDS and the Workload API", func() bool {
		return g.sdsCur.Load() != nil && g.wlCur.Load() != nil && g.sds.lastRoots() > 0 && g.wl.lastRoots() > 0
	})
	g.stop = g.load.start(ctx, g)
	t.Cleanup(g.stop)
	agentEventually(t, 30*time.Second, "traffic on every hop", func() bool {
		return g.load.ok.Load() > 50 && len(g.load.sides()) == len(bookinfoSides)
	})
	return g
}

// bookinfoWL feeds Workload API updates to the rig's trustLog and keeps
// the issuer of the latest SVID.
type bookinfoWL struct{ g *bookinfoRig }

func (w bookinfoWL) OnX509ContextUpdate(c *workloadapi.X509Context) {
	wlWatcher{w.g.wl}.OnX509ContextUpdate(c)
	if len(c.SVIDs) > 0 && len(c.SVIDs[0].Certificates) > 1 {
		fp := fingerprint(c.SVIDs[0].Certificates[1])
		w.g.wlCur.Store(&fp)
	}
}
func (bookinfoWL) OnX509ContextWatchError(error) {}

// bookinfoSides are the certificates the traffic sees: both ends of
// every Bookinfo hop, and ratings as the test's SDS client sees it.
var bookinfoSides = []string{
	"productpage->details server", "productpage->details client",
	"productpage->reviews server", "productpage->reviews client",
	"reviews->ratings server", "reviews->ratings client",
	"sds-client->ratings server",
}

// bookinfoLoad is the traffic and what its responses showed.
type bookinfoLoad struct {
	ok, failed atomic.Int64
	started    time.Time
	mu         sync.Mutex
	errs       []string
	// firstSeen: issuer fingerprint -> start of the first request whose
	// response showed a leaf that issuer signed.
	firstSeen map[string]time.Time
	recent    map[string][]string        // side -> issuers of its last observations
	serials   map[string]map[string]bool // side -> distinct leaf serials
}

func newBookinfoLoad() *bookinfoLoad {
	return &bookinfoLoad{firstSeen: map[string]time.Time{}, recent: map[string][]string{}, serials: map[string]map[string]bool{}}
}

// observe records that a request started at start saw on side a leaf
// with serial signed by issuer.
func (l *bookinfoLoad) observe(start time.Time, side, serial, issuer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.firstSeen[issuer]; !ok || start.Before(at) {
		l.firstSeen[issuer] = start
	}
	r := append(l.recent[side], issuer)
	l.recent[side] = r[max(0, len(r)-bookinfoRecent):]
	if l.serials[side] == nil {
		l.serials[side] = map[string]bool{}
	}
	l.serials[side][serial] = true
}

func (l *bookinfoLoad) fail(name string, err error) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), name, err))
	}
}

// sides returns the sides observed so far.
func (l *bookinfoLoad) sides() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(maps.Keys(l.recent))
}

// allUnder reports whether the last bookinfoRecent observations of every
// side show leaves signed by issuer.
func (l *bookinfoLoad) allUnder(issuer string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, side := range bookinfoSides {
		r := l.recent[side]
		if len(r) < bookinfoRecent {
			return false
		}
		for _, got := range r {
			if got != issuer {
				return false
			}
		}
	}
	return true
}

// minSerials is the fewest distinct leaves any side has shown.
func (l *bookinfoLoad) minSerials() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := -1
	for _, side := range bookinfoSides {
		if c := len(l.serials[side]); n < 0 || c < n {
			n = c
		}
	}
	return n
}

// start runs the traffic until ctx ends or the returned stop is called:
// workers asking productpage for the book's details (productpage ->
// details, both on the Workload API) and for its ratings (productpage ->
// reviews -> ratings, reviews and ratings on SDS), and workers calling
// ratings directly with the test's SDS material. Every request is a new
// mTLS handshake on every hop.
func (l *bookinfoLoad) start(ctx context.Context, g *bookinfoRig) (stop func()) {
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	page := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	base := g.d.demoURL() + "/api/v1/products/0"
	for i := range 6 {
		path := base
		if i%2 == 1 {
			path = base + "/ratings"
		}
		l.worker(tctx, &wg, "productpage "+path, func(ctx context.Context) error { return l.productpage(ctx, page, path) })
	}
	probe := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: sdsClientTLS(&g.sdsCur, bookinfoID("ratings")), DisableKeepAlives: true}}
	for range 2 {
		l.worker(tctx, &wg, "sds-client -> ratings", func(ctx context.Context) error { return l.ratings(ctx, probe, "https://"+g.d.demoPort(2)) })
	}
	l.started = time.Now()
	var once sync.Once
	return func() { once.Do(func() { cancel(); wg.Wait() }) }
}

func (l *bookinfoLoad) worker(ctx context.Context, wg *sync.WaitGroup, name string, do func(context.Context) error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			err := do(ctx)
			switch {
			case err == nil:
				l.ok.Add(1)
			case ctx.Err() == nil:
				l.fail(name, err)
			}
		}
	}()
}

// bookinfoHop is a hop as productpage's JSON API reports it.
type bookinfoHop struct {
	From, To       string
	Server, Client struct {
		SPIFFEID string `json:"spiffe_id"`
		Serial   string
		Issuer   string
	}
	Error string
}

// productpage GETs url and requires a whole answer: 200, the book's
// details or both ratings, and every hop between the right identities.
func (l *bookinfoLoad) productpage(ctx context.Context, client *http.Client, url string) error {
	start := time.Now()
	body, err := bookinfoGet(ctx, client, url)
	if err != nil {
		return err
	}
	var v struct {
		ISBN13  string `json:"ISBN-13"`
		Ratings map[string]int
		Hops    []bookinfoHop
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s: %w", body, err)
	}
	switch {
	case strings.HasSuffix(url, "/ratings"):
		if v.Ratings["Reviewer1"] != 5 || v.Ratings["Reviewer2"] != 4 || len(v.Hops) != 2 {
			return fmt.Errorf("ratings incomplete: %s", body)
		}
	case v.ISBN13 != "123-1234567890" || len(v.Hops) != 1:
		return fmt.Errorf("details incomplete: %s", body)
	}
	for _, h := range v.Hops {
		if err := l.hop(start, h); err != nil {
			return err
		}
	}
	return nil
}

// hop checks one reported hop and records both of its certificates.
func (l *bookinfoLoad) hop(start time.Time, h bookinfoHop) error {
	name := h.From + "->" + h.To
	if h.Error != "" {
		return fmt.Errorf("hop %s: %s", name, h.Error)
	}
	if h.Server.SPIFFEID != bookinfoID(h.To).String() || h.Client.SPIFFEID != bookinfoID(h.From).String() {
		return fmt.Errorf("hop %s between %s and %s", name, h.Client.SPIFFEID, h.Server.SPIFFEID)
	}
	if h.Server.Issuer == "" || h.Client.Issuer == "" {
		return fmt.Errorf("hop %s: a side presented no intermediate: %+v", name, h)
	}
	l.observe(start, name+" server", h.Server.Serial, h.Server.Issuer)
	l.observe(start, name+" client", h.Client.Serial, h.Client.Issuer)
	return nil
}

// ratings calls ratings as a reviews instance with the SDS material (the
// server verified against SDS's ROOTCA) and records ratings' certificate.
func (l *bookinfoLoad) ratings(ctx context.Context, client *http.Client, base string) error {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ratings/0", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	var v struct{ Ratings map[string]int }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil || v.Ratings["Reviewer1"] != 5 {
		return fmt.Errorf("ratings: %s %s", resp.Status, body)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) < 2 {
		return errors.New("ratings presented no chain")
	}
	leaf := resp.TLS.PeerCertificates[0]
	l.observe(start, "sds-client->ratings server", leaf.SerialNumber.Text(16), fingerprint(resp.TLS.PeerCertificates[1]))
	return nil
}

func bookinfoGet(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, body)
	}
	return body, nil
}

// replaced waits until every Bookinfo hop, the test's consumers and the
// agent's own SVID show leaves signed by the intermediate fp.
func (g *bookinfoRig) replaced(what, fp string) {
	g.t.Helper()
	agentEventually(g.t, 90*time.Second, what, func() bool {
		m, wl := g.sdsCur.Load(), g.wlCur.Load()
		return g.load.allUnder(fp) && m != nil && fingerprint(leafChain(m.cert)[1]) == fp && wl != nil && *wl == fp &&
			agentIssuer(g.t, filepath.Join(g.d.dir, "agent")) == fp
	})
}

// oldLeafTLS is an mTLS client configuration presenting the certificate
// of old (SDS material kept from before a rotation) and verifying the
// server against the current SDS bundle.
func (g *bookinfoRig) oldLeafTLS(old *sdsMaterial) *tls.Config {
	cfg := sdsClientTLS(&g.sdsCur, bookinfoID("ratings"))
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return old.cert, nil }
	return cfg
}

// callRatingsWith calls ratings once as a reviews instance with cfg.
func (g *bookinfoRig) callRatingsWith(cfg *tls.Config) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	_, err := bookinfoGet(g.t.Context(), client, "https://"+g.d.demoPort(2)+"/ratings/0")
	return err
}

// revokedLeafRefused checks the revocation from a peer's side: ratings
// accepts a leaf of the old authority (kept from before the rotation)
// while it is only tainted, then, within a bound once the old root has
// left the bundles, refuses it. revoke does the revocation.
func (g *bookinfoRig) revokedLeafRefused(old *sdsMaterial, revoke func()) {
	g.t.Helper()
	if err := g.callRatingsWith(g.oldLeafTLS(old)); err != nil {
		g.t.Fatalf("ratings refused a leaf of a tainted, not yet revoked authority: %v", err)
	}
	revoke()
	var last error
	agentEventually(g.t, 15*time.Second, "ratings refusing a leaf of the revoked authority", func() bool {
		last = g.callRatingsWith(g.oldLeafTLS(old))
		return last != nil
	})
	if msg := last.Error(); !strings.Contains(msg, "bad certificate") && !strings.Contains(msg, "unknown certificate authority") {
		g.t.Fatalf("the leaf of the revoked authority failed with %v; want ratings to refuse it with a TLS alert", last)
	}
	g.t.Logf("ratings refuses the leaf of the revoked authority: %v", last)
}

// finish stops the traffic and checks the run: no failed request, each
// consumer received every root before any leaf under it (trustLog), and
// every intermediate any peer presented chains to a root that both
// consumers had received before the request that showed it started.
func (g *bookinfoRig) finish() {
	g.t.Helper()
	g.stop()
	elapsed := time.Since(g.load.started)
	g.wl.check(g.t)
	g.sds.check(g.t)
	ok, failed := g.load.ok.Load(), g.load.failed.Load()
	if failed != 0 {
		g.t.Errorf("%d of %d requests failed: %v", failed, ok+failed, g.load.errs)
	}
	rootOfIssuer := map[string]string{}
	for _, a := range g.r.authorities() {
		rootOfIssuer[a.Intermediate.SHA256] = a.Root.SHA256
	}
	g.load.mu.Lock()
	firstSeen := maps.Clone(g.load.firstSeen)
	g.load.mu.Unlock()
	var leads []string
	for issuer, seen := range firstSeen {
		root, ok := rootOfIssuer[issuer]
		if !ok {
			g.t.Errorf("a peer presented a leaf signed by %s, which is no authority of the CA", issuer)
			continue
		}
		for _, l := range []*trustLog{g.sds, g.wl} {
			at, ok := l.rootArrived(root)
			if !ok || !at.Before(seen) {
				g.t.Errorf("%s client: root %s arrived at %v (%v), not before a peer presented a leaf under it at %v",
					l.name, root[:16], at.Format("15:04:05.000"), ok, seen.Format("15:04:05.000"))
				continue
			}
			leads = append(leads, fmt.Sprintf("%s %s: %s", issuer[:8], l.name, seen.Sub(at).Round(time.Millisecond)))
		}
	}
	slices.Sort(leads)
	g.t.Logf("%d requests (%.0f/s; each 1 or 2 mTLS handshakes), %d failed, in %s; %d authorities seen on the hops; "+
		"each root reached the client this long before the first leaf under each intermediate: %v",
		ok, float64(ok)/elapsed.Seconds(), failed, elapsed.Round(time.Second), len(firstSeen), leads)
}

// TestBookinfoCARotationUnderTraffic runs Bookinfo (castellan-demo: the
// real server, agent and services) under continuous traffic through
// productpage and from an SDS client straight to ratings, while the CA
// rotates its intermediate, then its root (activation refused until the
// new root has been published for the publish delay), taints each old
// authority and finally revokes them: no request fails, every hop and the
// agent's own SVID move to each new authority, the SDS and Workload API
// clients hold each new root before any peer presents a leaf under it,
// and the revoked roots leave both.
func TestBookinfoCARotationUnderTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Bookinfo and the real binaries for about two minutes")
	}
	g := startBookinfoRig(t, rotationTTL, "--server-arg=--publish-delay="+rotationPublishDelay.String())
	r := g.r
	first, ok := r.activeAuthority()
	if !ok || len(r.authorities()) != 1 {
		t.Fatalf("fresh CA authorities: %+v", r.authorities())
	}
	firstLeaf := g.sdsCur.Load()

	// 1. Intermediate rotation, then the first authority tainted.
	second := r.authorityJSON("authority", "prepare")
	if second.Root.SHA256 != first.Root.SHA256 {
		t.Fatalf("prepare: %+v, want an intermediate under the same root", second)
	}
	r.activateWhenPublished(second)
	r.authorityJSON("authority", "taint", first.ID)
	g.replaced("Bookinfo under the second intermediate after the taint", second.Intermediate.SHA256)

	// 2. Root rotation: refused before the publish delay, then allowed.
	third := r.authorityJSON("authority", "prepare", "--new-root")
	if code, _, errs := r.ctlExit("authority", "activate", third.ID); code != 4 || !strings.Contains(errs, "publish delay") {
		t.Fatalf("activation before the publish delay: exit %d %s, want 4 with the explanation", code, errs)
	}
	agentEventually(t, 10*time.Second, "the new root at both clients", func() bool {
		return g.wl.hasRoot(third.Root.SHA256) && g.sds.hasRoot(third.Root.SHA256)
	})
	r.activateWhenPublished(third)
	r.authorityJSON("authority", "taint", second.ID)
	g.replaced("Bookinfo under the new root after the taint", third.Intermediate.SHA256)

	// 3. The tainted authorities revoked: their root leaves both clients,
	// and ratings refuses a leaf under them.
	g.revokedLeafRefused(firstLeaf, func() {
		for _, a := range []rotAuthority{first, second} {
			if got := r.authorityJSON("authority", "revoke", a.ID, "--force"); got.State != "revoked" {
				t.Fatalf("revoke %s: %+v", a.ID, got)
			}
		}
		agentEventually(t, 10*time.Second, "the old root gone from both clients", func() bool {
			return g.wl.lastRoots() == 1 && g.sds.lastRoots() == 1
		})
	})
	base := g.load.ok.Load()
	agentEventually(t, 20*time.Second, "traffic after the revocation", func() bool { return g.load.ok.Load() > base+100 })
	g.finish()
}

// TestBookinfoPluginCARotationUnderTraffic is the same with a plug-in CA
// whose files an operator replaces on disk mid-traffic: a new
// intermediate, then a new root beside the old one in root.pem with an
// intermediate under it written at once (which signs only once the root
// has been published for the publish delay), each old authority tainted,
// then the old root taken out of root.pem and its authorities revoked.
func TestBookinfoPluginCARotationUnderTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Bookinfo and the real binaries for about two minutes")
	}
	ca := writeCACerts(t, t.TempDir())
	args := []string{"--server-arg=--publish-delay=" + rotationPublishDelay.String()}
	for _, f := range ca.flags() {
		args = append(args, "--server-arg="+f)
	}
	g := startBookinfoRig(t, rotationTTL, args...)
	r := g.r
	first, ok := r.activeAuthority()
	if !ok {
		t.Fatalf("no active authority: %+v", r.authorities())
	}
	firstLeaf := g.sdsCur.Load()

	// 1. A new intermediate file under the same root.
	second := r.waitActive("the new intermediate file signing", fingerprint(ca.newIntermediate()), 20*time.Second)
	r.authorityJSON("authority", "taint", first.ID)
	g.replaced("Bookinfo under the new intermediate file", second.Intermediate.SHA256)

	// 2. A new root and, at once, an intermediate under it.
	oldRoot := ca.roots
	ca.newRoot()
	newRoot := fingerprint(ca.root)
	written := time.Now()
	third := r.waitActive("the intermediate under the new root signing", fingerprint(ca.newIntermediate()), 30*time.Second)
	if time.Since(written) < rotationPublishDelay-500*time.Millisecond || third.Root.SHA256 != newRoot {
		t.Fatalf("authority %+v signed %v after its root was written, before the publish delay %v", third, time.Since(written), rotationPublishDelay)
	}
	r.authorityJSON("authority", "taint", second.ID)
	g.replaced("Bookinfo under the new root's intermediate", third.Intermediate.SHA256)

	// 3. The old root out of the files, its authorities revoked: ratings
	// refuses a leaf under them.
	g.revokedLeafRefused(firstLeaf, func() {
		ca.roots = ca.roots[len(oldRoot):]
		ca.write("root.pem", ca.roots)
		for _, a := range []rotAuthority{first, second} {
			if got := r.authorityJSON("authority", "revoke", a.ID, "--force"); got.State != "revoked" {
				t.Fatalf("revoke %s: %+v", a.ID, got)
			}
		}
		agentEventually(t, 15*time.Second, "the old root gone from both clients", func() bool {
			return g.wl.lastRoots() == 1 && g.sds.lastRoots() == 1
		})
	})
	base := g.load.ok.Load()
	agentEventually(t, 20*time.Second, "traffic after the revocation", func() bool { return g.load.ok.Load() > base+100 })
	g.finish()
}
