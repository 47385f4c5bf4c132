package client

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/client/catest"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/agent/upstream"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/clock/clocktest"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A state the CA pushes with junk in it (a CA bug, or a hostile CA) is
// converted with the junk left out and logged, and everything usable kept:
// a revoked serial pushed with leading zeros or in upper case reads as
// the serial the agent holds.
func TestStateFromProtoKeepsOnlyUsableValues(t *testing.T) {
	ca := catest.New(t, td)
	var logs bytes.Buffer
	c := &Client{log: slog.New(slog.NewTextHandler(&logs, nil))}
	held := serial.FromBig(big.NewInt(0x0fab))
	root := ca.Bundle().X509Authorities()[0]
	var roots [][]byte
	for _, r := range ca.Bundle().X509Authorities() {
		roots = append(roots, r.Raw)
	}
	st := c.stateFromProto(&cav1.AgentState{
		Bundle: &cav1.Bundle{TrustDomain: td.Name(), X509Authorities: roots},
		Entries: []*cav1.Entry{
			{Id: "e1", SpiffeId: "spiffe://cluster.local/ns/a/sa/b", TtlSeconds: 60, AllowAnyUser: true,
				Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}},
			{Id: "bad", SpiffeId: "not a SPIFFE ID"},
			{SpiffeId: "spiffe://cluster.local/no/id"},
		},
		RevokedSerials:     []string{"-" + held.String(), "not a serial", strings.Repeat("f", 300), "00" + strings.ToUpper(held.String())},
		TaintedAuthorities: [][]byte{[]byte("not a certificate"), root.Raw},
	})
	if st.Bundle == nil || !st.Bundle.Equal(ca.Bundle()) {
		t.Error("usable bundle lost")
	}
	want := upstream.Entry{ID: "e1", SPIFFEID: spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b"), TTL: time.Minute,
		AllowAnyUser: true, Selectors: []state.Selector{{Type: "unix", Value: "uid:1000"}}}
	if len(st.Entries) != 1 || st.Entries[0].ID != want.ID || st.Entries[0].SPIFFEID != want.SPIFFEID || st.Entries[0].TTL != want.TTL ||
		!st.Entries[0].AllowAnyUser || len(st.Entries[0].Selectors) != 1 || st.Entries[0].Selectors[0] != want.Selectors[0] || st.Entries[0].PodUID != "" {
		t.Errorf("entries %+v, want only %+v", st.Entries, want)
	}
	if len(st.Revoked) != 1 || st.Revoked[0] != held {
		t.Errorf("revoked %v, want only %v", st.Revoked, held)
	}
	if len(st.Tainted) != 1 || !st.Tainted[0].Equal(root) {
		t.Errorf("tainted %d certificates, want the one usable", len(st.Tainted))
	}
	for _, what := range []string{"unusable entry", "not a serial number", "not a certificate"} {
		if !strings.Contains(logs.String(), what) {
			t.Errorf("nothing logged about %q", what)
		}
	}

	// An unusable bundle is left out, not passed on.
	st = c.stateFromProto(&cav1.AgentState{Bundle: &cav1.Bundle{TrustDomain: td.Name(), X509Authorities: [][]byte{[]byte("junk")}}})
	if st.Bundle != nil {
		t.Error("unusable bundle passed on")
	}
}

// A pod entry is asked for by pod UID (the CA checks the pod), never by
// an entry ID; a registration entry by its ID; both with their TTL.
func TestSignRequestNamesPodByUIDAndEntryByID(t *testing.T) {
	pod := signRequest(upstream.Entry{ID: "u1", PodUID: "u1", TTL: time.Minute}, []byte{1})
	if pod.PodUid != "u1" || pod.EntryId != "" || pod.TtlSeconds != 60 || pod.Csr[0] != 1 {
		t.Errorf("pod request %v", pod)
	}
	ent := signRequest(upstream.Entry{ID: "e1"}, []byte{2})
	if ent.EntryId != "e1" || ent.PodUid != "" || ent.TtlSeconds != 0 {
		t.Errorf("entry request %v", ent)
	}
}

// Sign returns the CA's refusal of one request as that result's error,
// with the CA's code, and the others' SVIDs; a CA that cannot be reached
// is upstream.ErrUnavailable.
func TestSignReportsRefusalsPerRequestAndUnavailableCA(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	c := newClient(t, ca, t.TempDir(), clocktest.NewClock(time.Now()))
	ctx := t.Context()
	if err := c.Bootstrap(ctx, ca.JoinToken(t, "node-1")); err != nil {
		t.Fatal(err)
	}
	e := ca.AddEntry(t, &cav1.Entry{SpiffeId: "spiffe://cluster.local/ns/a/sa/b", Node: "node-1",
		Selectors: []*cav1.Selector{{Type: "unix", Value: "uid:1000"}}})
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/other")
	res, err := c.Sign(ctx, []upstream.Entry{
		{ID: "not-ours", SPIFFEID: other},
		{ID: e.Id, SPIFFEID: spiffeid.RequireFromString(e.SpiffeId)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if status.Code(res[0].Err) != codes.PermissionDenied || res[0].SVID != nil {
		t.Errorf("entry of no node: %+v, want PermissionDenied alone", res[0])
	}
	if res[1].Err != nil || res[1].SVID == nil || res[1].SVID.ID.String() != e.SpiffeId {
		t.Errorf("own entry: %+v", res[1])
	}
	ca.Stop()
	c.cfg.FailoverTimeout = -1
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Sign(sctx, []upstream.Entry{{ID: e.Id, SPIFFEID: spiffeid.RequireFromString(e.SpiffeId)}}); !errors.Is(err, upstream.ErrUnavailable) {
		t.Errorf("CA down: %v, want upstream.ErrUnavailable", err)
	}
}

// Sync waits until the agent holds its SVID: before Bootstrap it opens
// nothing and returns when its context ends.
func TestSyncWaitsForBootstrap(t *testing.T) {
	ca := catest.New(t, td)
	ca.Start(t)
	c := newClient(t, ca, t.TempDir(), clocktest.NewClock(time.Now()))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	called := false
	err := c.Sync(ctx, func(upstream.State) { called = true })
	if !errors.Is(err, context.DeadlineExceeded) || called {
		t.Fatalf("Sync before bootstrap: %v (update called: %v), want the context's end and no state", err, called)
	}
	if err := c.Bootstrap(t.Context(), ca.JoinToken(t, "node-1")); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	got := make(chan upstream.State, 1)
	go func() { _ = c.Sync(ctx2, func(st upstream.State) { got <- st; cancel2() }) }()
	select {
	case st := <-got:
		if st.Bundle == nil {
			t.Fatal("first state has no bundle")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no state after bootstrap")
	}
}
