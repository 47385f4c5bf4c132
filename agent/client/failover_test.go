package client

import (
	"context"
	"fmt"
	"maps"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/castellan-dev/castellan/internal/freeport"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

const workload = "spiffe://cluster.local/ns/a/sa/b"

// testAgent is a bootstrapped client and the entry it may sign for.
type testAgent struct {
	*Client
	entry *cav1.Entry
	reg   *prometheus.Registry // the client's metrics
}

// counter returns the value of the client's counter name with labels
// (name, value pairs); 0 if it has not been counted.
func (c *testAgent) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if maps.Equal(got, want) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// agents numbers the entries of failoverClient: the CA refuses two
// entries alike.
var agents atomic.Int64

// failoverClient returns a client of addrs, bootstrapped with a join token
// of ca (through whichever of addrs serves it), whose metrics are
// registered, and registers an entry for its node.
func failoverClient(t *testing.T, ca *catest.CA, addrs []string, mod func(*Config)) *testAgent {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{Addresses: addrs, TrustDomain: td, Bundle: ca.Bundle(), DataDir: t.TempDir(), Registry: reg}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.Bootstrap(ctx, ca.JoinToken(t, "node-1")); err != nil {
		t.Fatalf("bootstrap through %v: %v", addrs, err)
	}
	e := ca.AddEntry(t, &cav1.Entry{SpiffeId: fmt.Sprintf("%s-%d", workload, agents.Add(1)), Node: "node-1",
		Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}})
	return &testAgent{Client: c, entry: e, reg: reg}
}

// sign asks for one workload SVID and checks the answer.
func sign(ctx context.Context, c *testAgent) error {
	key, err := NewKey()
	if err != nil {
		return err
	}
	csr, err := NewCSR(key, spiffeid.RequireFromString(c.entry.SpiffeId))
	if err != nil {
		return err
	}
	res, err := c.batchSign(ctx, []*cav1.SignX509SVIDRequest{{Csr: csr, EntryId: c.entry.Id}})
	if err != nil {
		return err
	}
	if e := res[0].GetError(); e != nil {
		return status.Error(codes.Code(e.GetCode()), e.GetMessage())
	}
	_, err = svidFromProto(res[0].GetSvid(), key)
	return err
}

// closedAddr returns a loopback address nothing listens on, and that no
// other test on the machine is handed (internal/freeport).
func closedAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestSigningFailsOverFromUnavailableReplica: one replica answers
// Unavailable to everything (it lost its datastore); every signing call
// still succeeds, through the other, and each one that reached the failing
// replica is counted as a failover.
func TestSigningFailsOverFromUnavailableReplica(t *testing.T) {
	ca := catest.New(t, td)
	a, b := ca.Serve(t), ca.Serve(t)
	// Names and IPs verify alike: the agent checks the CA's SPIFFE ID.
	_, port, _ := net.SplitHostPort(b.Addr())
	c := failoverClient(t, ca, []string{a.Addr(), "localhost:" + port}, nil)
	a.Fail(status.Error(codes.Unavailable, "catest: datastore unreachable"))
	before := a.Calls()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for i := 0; a.Calls()-before < 3; i++ { // round-robin sends every other call to a
		if i == 50 {
			t.Fatalf("50 calls and only %d reached the failing replica: not balanced", a.Calls()-before)
		}
		if err := sign(ctx, c); err != nil {
			t.Fatalf("call %d failed although replica %s was up: %v", i, b.Addr(), err)
		}
	}
	// Every failed attempt was retried; the calls it belonged to were
	// served by b (a call may meet a twice while b is still connecting).
	failed := float64(a.Calls() - before)
	if got := c.counter(t, "castellan_agent_ca_retries_total", "call", "BatchSignX509SVID", "code", "Unavailable"); got != failed {
		t.Errorf("castellan_agent_ca_retries_total{call=BatchSignX509SVID,code=Unavailable} = %v, want %v", got, failed)
	}
	if got := c.counter(t, "castellan_agent_ca_failovers_total", "call", "BatchSignX509SVID"); got < 2 || got > failed {
		t.Errorf("castellan_agent_ca_failovers_total{call=BatchSignX509SVID} = %v, want 2 to %v", got, failed)
	}
}

// TestRefusalsAreNotRetried: an answer another replica would give too is
// returned at once, after one attempt.
func TestRefusalsAreNotRetried(t *testing.T) {
	ca := catest.New(t, td)
	a, b := ca.Serve(t), ca.Serve(t)
	c := failoverClient(t, ca, []string{a.Addr(), b.Addr()}, nil)
	for _, code := range []codes.Code{codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated, codes.ResourceExhausted, codes.Internal} {
		want := status.Error(code, "catest: refused")
		a.Fail(want)
		b.Fail(want)
		before := a.Calls() + b.Calls()
		err := sign(t.Context(), c)
		if status.Code(err) != code {
			t.Errorf("%v: err = %v, want that code", code, err)
		}
		if n := a.Calls() + b.Calls() - before; n != 1 {
			t.Errorf("%v: %d attempts, want 1", code, n)
		}
	}
}

// TestResourceExhaustedWaitsForTheCAsHint: a quota refusal with a retry
// delay is retried after exactly that delay (on the client's clock), and
// returned at once when the delay is past the failover budget or the
// call's deadline.
func TestResourceExhaustedWaitsForTheCAsHint(t *testing.T) {
	ca := catest.New(t, td)
	r := ca.Serve(t)
	clock := clocktest.NewClock(time.Now())
	c := failoverClient(t, ca, []string{r.Addr()}, func(cfg *Config) { cfg.Clock = clock; cfg.FailoverTimeout = time.Minute })
	quota := func(d time.Duration) error {
		st, _ := status.New(codes.ResourceExhausted, "catest: node quota").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st.Err()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	r.FailNext(1, quota(5*time.Second))
	before := r.Calls()
	done := make(chan error, 1)
	go func() { done <- sign(ctx, c) }()
	at := clock.Now().Add(5 * time.Second)
	if !clock.WaitFor(ctx, func(p []time.Time) bool { return len(p) == 1 && p[0].Equal(at) }) {
		t.Fatal("no retry planned 5s later, as the CA asked")
	}
	select {
	case err := <-done:
		t.Fatalf("call returned before the CA's delay: %v", err)
	default:
	}
	clock.Advance(5*time.Second - time.Millisecond)
	if n := r.Calls() - before; n != 1 {
		t.Fatalf("%d attempts before the delay passed, want 1", n)
	}
	clock.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatalf("retry after the delay: %v", err)
	}

	for _, d := range []time.Duration{
		2 * time.Minute,  // longer than the one-minute budget
		30 * time.Second, // longer than what is left of ctx's 20s
	} {
		r.FailNext(1, quota(d))
		before = r.Calls()
		if err := sign(ctx, c); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "no CA endpoint served the call") {
			t.Fatalf("delay %v: err = %v, want ResourceExhausted at once, naming the give-up", d, err)
		}
		if n := r.Calls() - before; n != 1 {
			t.Fatalf("delay %v: %d attempts, want 1", d, n)
		}
	}
}

// TestAllEndpointsDownFailsClearlyWithinTheBudget: with every endpoint
// down, a call keeps trying for FailoverTimeout (or until its own
// deadline) and then fails with Unavailable, saying what it tried.
func TestAllEndpointsDownFailsClearlyWithinTheBudget(t *testing.T) {
	ca := catest.New(t, td)
	r := ca.Serve(t)
	dead := closedAddr(t)
	c := failoverClient(t, ca, []string{r.Addr(), dead}, func(cfg *Config) { cfg.FailoverTimeout = time.Second })
	r.Stop()

	start := time.Now()
	err := sign(t.Context(), c)
	elapsed := time.Since(start)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	m := regexp.MustCompile(`no CA endpoint served the call within \S+ \((\d+) attempts`).FindStringSubmatch(err.Error())
	if m == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %q, want it to say how many attempts failed and why (connection refused)", err)
	}
	if n, _ := strconv.Atoi(m[1]); n < 2 {
		t.Fatalf("gave up after %d attempt(s), want retries within the 1s budget", n)
	}
	if elapsed > 5*time.Second {
		t.Fatalf("gave up after %v, want about the 1s budget", elapsed)
	}

	// The caller's deadline ends the retries sooner than the budget.
	r2 := ca.Serve(t)
	c2 := failoverClient(t, ca, []string{r2.Addr()}, func(cfg *Config) { cfg.FailoverTimeout = time.Hour })
	r2.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = sign(ctx, c2)
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want Unavailable or DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("call with a 300ms deadline returned after %v", elapsed)
	}
}

// servedBy returns the one replica whose call count moved since before.
func servedBy(t *testing.T, rs []*catest.Replica, before []int) int {
	t.Helper()
	got := -1
	for i, r := range rs {
		if r.Calls() != before[i] {
			if got >= 0 {
				t.Fatalf("replicas %d and %d both got calls", got, i)
			}
			got = i
		}
	}
	if got < 0 {
		t.Fatal("no replica got the call")
	}
	return got
}

func callCounts(rs []*catest.Replica) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.Calls()
	}
	return out
}

// TestSyncStreamResumesOnAnotherReplica kills the replica serving the
// SyncAgent stream: the stream ends at once, and a stream reopened right
// away (as the manager does) is served by another replica with the full
// state, then gets its changes.
func TestSyncStreamResumesOnAnotherReplica(t *testing.T) {
	ca := catest.New(t, td)
	rs := []*catest.Replica{ca.Serve(t), ca.Serve(t), ca.Serve(t)}
	c := failoverClient(t, ca, []string{rs[0].Addr(), rs[1].Addr(), rs[2].Addr()}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	before := callCounts(rs)
	s, err := c.syncAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	dead := servedBy(t, rs, before)
	rs[dead].Stop() // every connection closes, as when the process is killed
	for {           // bounded by ctx
		if _, err := s.Recv(); err != nil {
			if ctx.Err() != nil {
				t.Fatal("stream did not end within 10s of its replica's death")
			}
			break
		}
	}

	before = callCounts(rs)
	s, err = c.syncAgent(ctx)
	if err != nil {
		t.Fatalf("reopening the stream with two replicas up: %v", err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatalf("reopened stream: %v", err)
	}
	if got := servedBy(t, rs, before); got == dead {
		t.Fatal("reopened stream served by the dead replica")
	}
	if es := resp.GetState().GetEntries(); len(es) != 1 || es[0].GetId() != c.entry.Id {
		t.Fatalf("resynced state has entries %v, want %s", es, c.entry.Id)
	}
	ca.AddEntry(t, &cav1.Entry{SpiffeId: workload + "-other", Node: "node-1", Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1001"}}})
	if resp, err = s.Recv(); err != nil || len(resp.GetState().GetEntries()) != 2 {
		t.Fatalf("change after the failover: %v, %v; want both entries", resp.GetState().GetEntries(), err)
	}
	if got := c.counter(t, "castellan_agent_ca_failovers_total", "call", "SyncAgent"); got != 1 {
		t.Fatalf("castellan_agent_ca_failovers_total{call=SyncAgent} = %v, want 1", got)
	}
}

// TestEndpointWithWrongCertificateIsNeverUsed lists, before the real CA,
// a server certified by the CA's own intermediate for a workload's SPIFFE
// ID (a thief of any SVID could run it) and a server of another CA that
// claims the CA's SPIFFE ID: neither gets a single call, not even the
// join token, and with nothing else to reach the agent fails.
func TestEndpointWithWrongCertificateIsNeverUsed(t *testing.T) {
	ca := catest.New(t, td)
	impostor := ca.Impostor(t, spiffeid.RequireFromString(workload))
	foreign := catest.New(t, td).Serve(t)
	real := ca.Serve(t)
	c := failoverClient(t, ca, []string{impostor.Addr(), foreign.Addr(), real.Addr()}, nil)
	for i := range 6 {
		if err := sign(t.Context(), c); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n, m := impostor.Calls(), foreign.Calls(); n != 0 || m != 0 {
		t.Fatalf("impostor got %d calls, foreign CA %d; want none", n, m)
	}
	// Both refusals are counted (the handshakes run beside the calls).
	for deadline := time.Now().Add(5 * time.Second); c.counter(t, "castellan_agent_ca_handshake_failures_total") < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("castellan_agent_ca_handshake_failures_total = %v, want the impostor's and the foreign CA's", c.counter(t, "castellan_agent_ca_handshake_failures_total"))
		}
	}

	// Only the impostor: the join token is never sent.
	only, err := New(Config{Addresses: []string{impostor.Addr()}, TrustDomain: td, Bundle: ca.Bundle(), DataDir: t.TempDir(), FailoverTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	tok := ca.JoinToken(t, "node-2")
	err = only.Bootstrap(t.Context(), tok)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "unexpected ID") {
		t.Fatalf("bootstrap through the impostor: %v; want Unavailable naming the unexpected ID", err)
	}
	if n := impostor.Calls(); n != 0 {
		t.Fatalf("impostor got %d calls", n)
	}
	fresh, err := New(Config{Addresses: []string{real.Addr()}, TrustDomain: td, Bundle: ca.Bundle(), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.Bootstrap(t.Context(), tok); err != nil {
		t.Fatalf("the token the impostor never saw is refused by the real CA: %v", err)
	}
}

// TestOneNameWithSeveralAddressesIsBalanced serves one name with two A
// records from a DNS server on loopback, as a Kubernetes headless Service
// is served: calls reach the replicas at both addresses, and when one dies
// the other serves every call.
func TestOneNameWithSeveralAddressesIsBalanced(t *testing.T) {
	ca := catest.New(t, td)
	a := ca.Serve(t)
	_, port, _ := net.SplitHostPort(a.Addr())
	b := ca.ServeAt(t, net.JoinHostPort("127.0.0.2", port))
	dns := serveDNS(t, "ca-headless.castellan.test.", net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2))
	c := failoverClient(t, ca, []string{"dns://" + dns + "/ca-headless.castellan.test:" + port}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for i := 0; a.Calls() < 2 || b.Calls() < 2; i++ {
		if i == 50 {
			t.Fatalf("50 calls: %d reached 127.0.0.1, %d 127.0.0.2; want both used", a.Calls(), b.Calls())
		}
		if err := sign(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	a.Stop()
	before := b.Calls()
	for i := range 4 {
		if err := sign(ctx, c); err != nil {
			t.Fatalf("call %d after 127.0.0.1 died: %v", i, err)
		}
	}
	if n := b.Calls() - before; n != 4 {
		t.Fatalf("127.0.0.2 served %d of 4 calls", n)
	}
}

// TestNotServingReplicaGetsNoCalls: a replica whose gRPC health service
// says NOT_SERVING (the real CA does when it cannot issue) is skipped.
func TestNotServingReplicaGetsNoCalls(t *testing.T) {
	ca := catest.New(t, td)
	a, b := ca.Serve(t), ca.Serve(t)
	a.SetServing(false)
	c := failoverClient(t, ca, []string{a.Addr(), b.Addr()}, nil)
	for i := range 6 {
		if err := sign(t.Context(), c); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := a.Calls(); n != 0 {
		t.Fatalf("NOT_SERVING replica got %d calls", n)
	}
}

// serveDNS answers A queries for name with ips (and every other query with
// no records) on a UDP loopback port, which it returns.
func serveDNS(t *testing.T, name string, ips ...net.IP) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out, err := dnsAnswer(buf[:n], name, ips); err == nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func dnsAnswer(query []byte, name string, ips []net.IP) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	rcode := dnsmessage.RCodeSuccess
	if !strings.EqualFold(q.Name.String(), name) {
		rcode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RCode: rcode})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if rcode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA {
		for _, ip := range ips {
			var a [4]byte
			copy(a[:], ip.To4())
			rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 30}
			if err := b.AResource(rh, dnsmessage.AResource{A: a}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}
