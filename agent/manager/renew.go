package manager

import (
	"context"
	"crypto"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/client"
	"github.com/castellan-dev/castellan/agent/logcheck"
	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// renew obtains new SVIDs for the due entries, in batches of at most the
// policy's BatchSize, stores them and then publishes them.
func (m *Manager) renew(ctx context.Context, due []string) {
	for len(due) > 0 {
		n := min(len(due), m.cfg.Policy.BatchSize())
		m.renewBatch(ctx, due[:n])
		due = due[n:]
	}
}

type pending struct {
	key     string
	privKey crypto.Signer
}

func (m *Manager) renewBatch(ctx context.Context, keys []string) {
	var (
		reqs []*cav1.SignX509SVIDRequest
		pend []pending
	)
	for _, key := range keys {
		id := m.ids[key]
		req, priv, err := m.request(key, id)
		if err != nil {
			m.fail(key, err)
			continue
		}
		reqs = append(reqs, req)
		pend = append(pend, pending{key, priv})
	}
	if len(reqs) == 0 {
		m.publish()
		return
	}
	sctx, cancel := context.WithTimeout(ctx, m.cfg.SignTimeout)
	results, err := m.cfg.CA.BatchSign(sctx, reqs)
	cancel()
	if err != nil {
		if sctx.Err() == nil && status.Code(err) == codes.Unavailable {
			m.caUp.Store(false)
		}
		for _, p := range pend {
			m.fail(p.key, err)
		}
		m.publish()
		return
	}
	m.caUp.Store(true)
	now := m.cfg.Clock.Now()
	var stored []cache.Record
	var certs []logcheck.Cert
	for i, res := range results {
		rec, err := m.record(pend[i], res, now)
		if err != nil {
			m.fail(pend[i].key, err)
			continue
		}
		stored = append(stored, rec)
		certs = append(certs, logCert(rec, res))
	}
	stored, certs = m.enforceLog(ctx, stored, certs)
	if len(stored) > 0 {
		if err := m.cfg.Cache.Put(m.bundle, stored...); err != nil {
			for _, r := range stored {
				m.fail(r.EntryID, err)
			}
			stored = nil
		}
	}
	for _, r := range stored { // durable: now they may be served
		id := m.ids[r.EntryID]
		id.rec, id.serial, id.reissue, id.revoked, id.attempts, id.retryAt = r, serialOf(r), false, false, 0, time.Time{}
		m.metrics.rotations.WithLabelValues("success").Inc()
		m.log.Info("SVID issued", "entry_id", r.EntryID, "spiffe_id", r.SVID.ID.String(),
			"not_after", r.NotAfter(), "next_rotation", r.NextRotation)
	}
	m.publish()
	m.monitorLog(ctx, stored, certs)
}

// request makes a fresh P-256 key and a CSR for the entry.
func (m *Manager) request(key string, id *identity) (*cav1.SignX509SVIDRequest, crypto.Signer, error) {
	sid, err := spiffeid.FromString(id.spiffeID)
	if err != nil {
		return nil, nil, fmt.Errorf("manager: entry has an invalid SPIFFE ID: %w", err)
	}
	priv, err := client.NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := client.NewCSR(priv, sid)
	if err != nil {
		return nil, nil, err
	}
	return &cav1.SignX509SVIDRequest{Csr: csr, EntryId: key, TtlSeconds: int64(id.rec.TTL / time.Second)}, priv, nil
}

// record validates one batch result into a cache record.
func (m *Manager) record(p pending, res *cav1.BatchResult, now time.Time) (cache.Record, error) {
	if e := res.GetError(); e != nil {
		return cache.Record{}, status.Error(codes.Code(e.GetCode()), e.GetMessage())
	}
	svid, err := client.SVIDFromProto(res.GetSvid(), p.privKey)
	if err != nil {
		return cache.Record{}, err
	}
	id := m.ids[p.key]
	if svid.ID.String() != id.spiffeID {
		return cache.Record{}, fmt.Errorf("manager: CA signed %s, entry wants %s", svid.ID, id.spiffeID)
	}
	if m.bundle != nil {
		if _, _, err := x509svid.Verify(svid.Certificates, m.bundle, x509svid.WithTime(now)); err != nil {
			return cache.Record{}, fmt.Errorf("manager: CA returned an SVID the trust bundle rejects: %w", err)
		}
	}
	leaf := svid.Certificates[0]
	if !now.Before(leaf.NotAfter) {
		return cache.Record{}, fmt.Errorf("manager: CA returned an SVID that expired at %s", leaf.NotAfter)
	}
	rec := id.rec
	rec.SVID = svid
	rec.NextRotation = m.cfg.Policy.RenewAt(now, leaf.NotBefore, leaf.NotAfter)
	return rec, nil
}

// fail schedules a retry with backoff; a revoked SVID without replacement
// stops being served.
func (m *Manager) fail(key string, err error) {
	id := m.ids[key]
	id.attempts++
	life := time.Duration(0)
	if id.rec.SVID != nil {
		life = id.rec.NotAfter().Sub(id.rec.SVID.Certificates[0].NotBefore)
	} else if id.rec.TTL > 0 {
		life = id.rec.TTL
	}
	wait := m.cfg.Policy.Backoff(id.attempts, life)
	id.retryAt = m.cfg.Clock.Now().Add(wait)
	m.metrics.rotations.WithLabelValues("failure").Inc()
	m.log.Warn("could not obtain SVID; keeping the current one and retrying", "entry_id", key,
		"attempt", id.attempts, "retry_in", wait.String(), "error", err.Error())
	if id.revoked && id.rec.SVID != nil {
		m.log.Error("revoked SVID could not be replaced; no longer serving it", "entry_id", key, "serial", id.serial)
		id.rec.SVID = nil
		m.dropCached(key)
	}
}

// serialOf is the serial of r's leaf (the zero Number before the first
// SVID), compared with the revoked serials the CA pushes.
func serialOf(r cache.Record) serial.Number {
	if r.SVID == nil {
		return serial.Number{}
	}
	return serial.FromBig(r.SVID.Certificates[0].SerialNumber)
}
