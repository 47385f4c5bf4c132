// Package agentrec is the stored record of a node's agent in the ledger's
// agents index: the events of the log that concern the agent (its agent
// SVIDs, join-token uses, bans and unbans) folded into one record per node.
package agentrec

import (
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
)

// agentPath is the path prefix of agent SVIDs (spiffe://<td>/castellan/agent/<node>).
const agentPath = "/castellan/agent/"

// Record is the stored record of a node's agent (JSON; ledger Agent).
type Record struct {
	SPIFFEID  string    `json:"spiffe_id,omitempty"`
	Serial    string    `json:"serial,omitempty"`
	NotAfter  time.Time `json:"not_after"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Banned    bool      `json:"banned,omitempty"`
	BanIndex  uint64    `json:"ban_index,omitempty"`
	BanTime   time.Time `json:"ban_time"`
	BanReason string    `json:"ban_reason,omitempty"`
}

// Concerns reports whether ev changes its node's agent record.
func Concerns(ev *entry.Event) bool {
	switch ev.Kind {
	case entry.KindJoinTokenUse, entry.KindBan, entry.KindUnban:
		return ev.Node != ""
	}
	return IsAgentCert(ev)
}

// IsAgentCert reports whether ev is an agent SVID issued to ev.Node:
// spiffe://<td>/castellan/agent/<ev.Node>.
func IsAgentCert(ev *entry.Event) bool {
	if !ev.Kind.IsCertificate() || ev.Node == "" {
		return false
	}
	rest, ok := strings.CutPrefix(ev.SPIFFEID, "spiffe://")
	td, path, found := strings.Cut(rest, "/")
	return ok && found && td != "" && "/"+path == agentPath+ev.Node
}

// Apply folds ev, the event at log index idx, into the record.
func (r *Record) Apply(idx uint64, ev *entry.Event) {
	switch ev.Kind {
	case entry.KindBan:
		r.Banned, r.BanIndex, r.BanTime, r.BanReason = true, idx, ev.Time, ev.Reason
		return
	case entry.KindUnban:
		r.Banned, r.BanIndex, r.BanTime, r.BanReason = false, 0, time.Time{}, ""
		return
	}
	if r.FirstSeen.IsZero() {
		r.FirstSeen = ev.Time
	}
	r.LastSeen = ev.Time
	if ev.Kind.IsCertificate() {
		r.SPIFFEID, r.Serial, r.NotAfter = ev.SPIFFEID, ev.Serial, ev.NotAfter
	}
}
