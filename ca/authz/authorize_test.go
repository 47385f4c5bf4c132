package authz

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/refusal"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// allowPods is a pod authorizer that allows everything, to check routing.
type allowPods struct{}

func (allowPods) Authorize(_ context.Context, r Request) (Grant, error) {
	return Grant{EntryID: r.PodUID}, nil
}

func TestAuthorizeAllowsOnlyEntriesOfCallersNode(t *testing.T) {
	e := newEntries(t)
	ctx := context.Background()
	app := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app")
	ent := entry(app.String(), "node-a", "unix:uid:1000")
	ent.TtlSeconds = 600
	a1, err := e.Create(ctx, ent)
	if err != nil {
		t.Fatal(err)
	}
	b1, err := e.Create(ctx, entry("spiffe://cluster.local/ns/default/sa/db", "node-b", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	az := &NodeAuthorizer{Entries: e}

	g, err := az.Authorize(ctx, Request{Node: "node-a", ID: app})
	if err != nil || g.EntryID != a1.Id || g.TTL != 10*time.Minute {
		t.Fatalf("own entry: %+v, %v", g, err)
	}
	if g, err := az.Authorize(ctx, Request{Node: "node-a", ID: app, EntryID: a1.Id}); err != nil || g.EntryID != a1.Id {
		t.Fatalf("named own entry: %+v, %v", g, err)
	}
	for _, tc := range []struct {
		name   string
		req    Request
		reason string
		msg    string
	}{
		{"other node", Request{Node: "node-b", ID: app}, ReasonNotAssigned, `assigns spiffe://cluster.local/ns/default/sa/app to node "node-b"`},
		{"other node's entry", Request{Node: "node-a", ID: spiffeid.RequireFromString(b1.SpiffeId), EntryID: b1.Id}, ReasonEntryMismatch, "does not assign"},
		{"entry for another ID", Request{Node: "node-a", ID: spiffeid.RequireFromString("spiffe://cluster.local/x"), EntryID: a1.Id}, ReasonEntryMismatch, "does not assign"},
		{"unknown entry", Request{Node: "node-a", ID: app, EntryID: "nope"}, ReasonEntryNotFound, "does not exist"},
		{"pod without k8s", Request{Node: "node-a", ID: app, PodUID: "p"}, ReasonNoPodAuthz, "no Kubernetes pod authorizer"},
	} {
		_, err := az.Authorize(ctx, tc.req)
		var de *refusal.Error
		if !errors.As(err, &de) || de.Reason != tc.reason || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v; want %s containing %q", tc.name, err, tc.reason, tc.msg)
		}
	}
	az.Pods = allowPods{}
	if g, err := az.Authorize(ctx, Request{Node: "node-b", ID: app, PodUID: "uid-1"}); err != nil || g.EntryID != "uid-1" {
		t.Fatalf("pod request not routed to the pod authorizer: %+v, %v", g, err)
	}
}
