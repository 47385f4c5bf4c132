package manager

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/logcheck"
	"github.com/castellan-dev/castellan/agent/upstream"
	"github.com/castellan-dev/castellan/internal/serial"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
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

// renewBatch asks the CA for new SVIDs for keys in one call, keeps those
// the checks accept, stores them and then publishes them.
func (m *Manager) renewBatch(ctx context.Context, keys []string) {
	results, ok := m.signBatch(ctx, keys)
	if !ok {
		return
	}
	stored, certs := m.accept(keys, results)
	stored, certs = m.enforceLog(ctx, stored, certs)
	m.store(stored)
	m.publish()
	m.monitorLog(ctx, stored, certs)
}

// signBatch asks the CA for new SVIDs for keys in one call, bounded by
// SignTimeout, and returns one result per key. If the call fails, or
// answers another number of results, every key fails with that error, the
// failure is published, and it reports false.
func (m *Manager) signBatch(ctx context.Context, keys []string) ([]upstream.Signed, bool) {
	entries := make([]upstream.Entry, 0, len(keys))
	for _, key := range keys {
		entries = append(entries, m.request(key))
	}
	sctx, cancel := context.WithTimeout(ctx, m.cfg.SignTimeout)
	results, err := m.cfg.CA.Sign(sctx, entries)
	timedOut := sctx.Err() != nil // read before cancel, which sets it
	cancel()
	if err == nil && len(results) != len(entries) {
		err = fmt.Errorf("manager: CA answered %d results for %d requests", len(results), len(entries))
	}
	if err != nil {
		if !timedOut && errors.Is(err, upstream.ErrUnavailable) {
			m.caUp.Store(false)
		}
		for _, key := range keys {
			m.fail(key, err)
		}
		m.publish()
		return nil, false
	}
	m.caUp.Store(true)
	return results, true
}

// accept validates the CA's result for each of keys into a cache record,
// failing the keys whose result the checks refuse, and returns the records
// with their certificates for the issuance log check.
func (m *Manager) accept(keys []string, results []upstream.Signed) ([]cache.Record, []logcheck.Cert) {
	now := m.cfg.Clock.Now()
	var stored []cache.Record
	var certs []logcheck.Cert
	for i, res := range results {
		rec, err := m.record(keys[i], res, now)
		if err != nil {
			m.fail(keys[i], err)
			continue
		}
		stored = append(stored, rec)
		certs = append(certs, logcheck.Cert{DER: rec.SVID.Certificates[0].Raw, Index: res.LogIndex})
	}
	return stored, certs
}

// store makes recs durable, then current: only then may they be served.
// On a cache failure every one of them fails.
func (m *Manager) store(recs []cache.Record) {
	if len(recs) == 0 {
		return
	}
	if err := m.cfg.Cache.Put(m.bundle, recs...); err != nil {
		for _, r := range recs {
			m.fail(r.EntryID, err)
		}
		return
	}
	for _, r := range recs {
		id := m.ids[r.EntryID]
		id.rec, id.serial, id.reissue, id.revoked, id.attempts, id.retryAt = r, serialOf(r), false, false, 0, time.Time{}
		m.metrics.rotations.WithLabelValues("success").Inc()
		m.log.Info("SVID issued", "entry_id", r.EntryID, "spiffe_id", r.SVID.ID.String(),
			"not_after", r.NotAfter(), "next_rotation", r.NextRotation)
	}
}

// request is the entry to ask an SVID for, with the lifetime the identity
// asks for.
func (m *Manager) request(key string) upstream.Entry {
	id := m.ids[key]
	e := id.entry
	e.TTL = id.rec.TTL
	return e
}

// record validates one result into a cache record.
func (m *Manager) record(key string, res upstream.Signed, now time.Time) (cache.Record, error) {
	if res.Err != nil {
		return cache.Record{}, res.Err
	}
	svid := res.SVID
	if svid == nil || len(svid.Certificates) == 0 {
		return cache.Record{}, errors.New("manager: CA returned no certificate")
	}
	if !keyMatches(svid) {
		return cache.Record{}, errors.New("manager: CA returned an SVID whose key is not the one it was asked for")
	}
	id := m.ids[key]
	if svid.ID != id.entry.SPIFFEID {
		return cache.Record{}, fmt.Errorf("manager: CA signed %s, entry wants %s", svid.ID, id.entry.SPIFFEID)
	}
	if m.bundle != nil {
		if err := m.chains.Verify(svid.Certificates, m.bundle, now); err != nil {
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

// keyMatches reports whether svid's private key is the leaf's.
func keyMatches(svid *x509svid.SVID) bool {
	if svid.PrivateKey == nil {
		return false
	}
	pub, ok := svid.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(svid.Certificates[0].PublicKey)
}
