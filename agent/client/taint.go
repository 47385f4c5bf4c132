package client

import (
	"bytes"
	"crypto/x509"
	"sync"
	"time"
)

// agentTaint is when the agent SVID, signed by a tainted authority, is to
// be replaced: chosen once per SVID by the rotate policy's taint window.
type agentTaint struct {
	mu     sync.Mutex
	serial []byte    // the agent SVID's serial the time is for
	at     time.Time // when to renew it
	wake   chan struct{}
}

// renewAt returns the time chosen for leaf, if it is under a tainted
// authority.
func (t *agentTaint) renewAt(leaf *x509.Certificate) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.at, t.serial != nil && bytes.Equal(t.serial, leaf.SerialNumber.Bytes())
}

// Taint is given the signing certificates of the tainted authorities (the
// manager's Config.OnTaints): if the agent SVID was signed by one, Run
// renews it within the rotate policy's taint window instead of at half its
// lifetime (the CA accepts an early renewal of a certificate under a
// tainted authority). Repeated calls keep the time first chosen.
func (c *Client) Taint(tainted []*x509.Certificate) {
	svid := c.AgentSVID()
	if svid == nil || !signedByAny(svid.Certificates[0], tainted) {
		return
	}
	leaf := svid.Certificates[0]
	c.taint.mu.Lock()
	if bytes.Equal(c.taint.serial, leaf.SerialNumber.Bytes()) {
		c.taint.mu.Unlock()
		return
	}
	now := c.cfg.Clock.Now()
	c.taint.serial, c.taint.at = leaf.SerialNumber.Bytes(), c.cfg.Policy.TaintedRenewAt(now, leaf.NotAfter)
	at := c.taint.at
	c.taint.mu.Unlock()
	c.log.Warn("agent SVID chains to a tainted authority; replacing it", "renew_at", at)
	select {
	case c.taint.wake <- struct{}{}:
	default:
	}
}

// signedByAny reports whether leaf was signed by one of issuers.
func signedByAny(leaf *x509.Certificate, issuers []*x509.Certificate) bool {
	for _, is := range issuers {
		if bytes.Equal(leaf.RawIssuer, is.RawSubject) && leaf.CheckSignatureFrom(is) == nil {
			return true
		}
	}
	return false
}
