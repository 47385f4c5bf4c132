package manager

import (
	"bytes"
	"crypto/x509"
)

// applyTaints brings forward the renewal of every held SVID whose chain
// includes a tainted authority (the CA pushes their signing certificates):
// each is renewed at the time the rotate policy picks within its taint
// window, so the node's SVIDs, and the trust domain's agents, do not all
// ask the CA at once. It is idempotent: an SVID already due within the
// window keeps its time, so repeated pushes of the same taint do not
// re-draw it. A replacement is signed by the active authority, which is
// never tainted, so it is not brought forward again.
func (m *Manager) applyTaints(tainted []*x509.Certificate) {
	if len(tainted) == 0 {
		return
	}
	if m.cfg.OnTaints != nil {
		m.cfg.OnTaints(tainted)
	}
	now := m.cfg.Clock.Now()
	for key, id := range m.ids {
		if id.rec.SVID == nil || !chainUnder(id.rec.SVID.Certificates, tainted) {
			continue
		}
		at := m.cfg.Policy.TaintedRenewAt(now, id.rec.NextRotation)
		if !at.Before(id.rec.NextRotation) {
			continue
		}
		id.rec.NextRotation = at
		m.log.Warn("SVID chains to a tainted authority; replacing it", "entry_id", key,
			"spiffe_id", id.rec.SVID.ID.String(), "serial", id.serial, "renew_at", at)
	}
}

// chainUnder reports whether chain (leaf first) includes one of tainted,
// or was signed by one of them (a certificate naming it as issuer, with
// its key identifier): a chain sent without its intermediate is still
// recognised.
func chainUnder(chain, tainted []*x509.Certificate) bool {
	for _, c := range chain {
		for _, t := range tainted {
			if bytes.Equal(c.Raw, t.Raw) {
				return true
			}
			if len(t.SubjectKeyId) > 0 && bytes.Equal(c.AuthorityKeyId, t.SubjectKeyId) &&
				bytes.Equal(c.RawIssuer, t.RawSubject) {
				return true
			}
		}
	}
	return false
}
