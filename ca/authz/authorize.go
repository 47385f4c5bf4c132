package authz

import (
	"context"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Request is one SVID an agent asks for.
type Request struct {
	// Node is the calling agent's node, from its verified agent SVID.
	Node string
	// ID is the SPIFFE ID requested (from the validated CSR).
	ID spiffeid.ID
	// EntryID names the registration entry the SVID is for; optional.
	EntryID string
	// PodUID names the Kubernetes pod the SVID is for; optional.
	PodUID string
}

// Grant is a positive decision.
type Grant struct {
	// EntryID is the entry (or pod UID) that allowed the request.
	EntryID string
	// TTL is the lifetime the grant asks for when the request asks none
	// (0: the CA's default).
	TTL time.Duration
}

// Authorizer decides whether a node may obtain an SVID. It returns a
// *refusal.Error (PermissionDenied, see Deny) when not. Implementations must be safe
// for concurrent use.
type Authorizer interface {
	Authorize(ctx context.Context, req Request) (Grant, error)
}

// NodeAuthorizer is Castellan's authorization rule: requests naming a pod
// go to Pods (a Kubernetes pod-based authorizer; refused when nil); all
// others are allowed only if a registration entry assigns the requested
// SPIFFE ID to the caller's node — the entry named by EntryID when set, any
// such entry otherwise.
type NodeAuthorizer struct {
	Entries *Entries
	Pods    Authorizer
}

// Authorize implements Authorizer.
func (a *NodeAuthorizer) Authorize(ctx context.Context, req Request) (Grant, error) {
	if req.PodUID != "" {
		if a.Pods == nil {
			return Grant{}, deny(ReasonNoPodAuthz, "request names pod %q but this CA has no Kubernetes pod authorizer; request by entry_id", req.PodUID)
		}
		return a.Pods.Authorize(ctx, req)
	}
	want := req.ID.String()
	if req.EntryID != "" {
		ent := a.Entries.get(req.EntryID)
		switch {
		case ent == nil:
			return Grant{}, deny(ReasonEntryNotFound, "registration entry %q does not exist (requested %s for node %q)", req.EntryID, want, req.Node)
		case ent.Node != req.Node || ent.SpiffeId != want:
			return Grant{}, deny(ReasonEntryMismatch, "registration entry %q does not assign %s to node %q", req.EntryID, want, req.Node)
		}
		return grantOf(ent), nil
	}
	var g Grant
	found := false
	a.Entries.lookup(req.Node, func(ents []*cav1.Entry) {
		for _, ent := range ents {
			if ent.SpiffeId == want {
				g, found = grantOf(ent), true
				return
			}
		}
	})
	if !found {
		return Grant{}, deny(ReasonNotAssigned, "no registration entry assigns %s to node %q; create one with `castellanctl entry create --spiffe-id %s --node %s --selector ...`",
			want, req.Node, want, req.Node)
	}
	return g, nil
}

func grantOf(ent *cav1.Entry) Grant {
	return Grant{EntryID: ent.Id, TTL: time.Duration(ent.TtlSeconds) * time.Second}
}
