package manager

import (
	"context"

	"github.com/castellan-dev/castellan/agent/cache"
	"github.com/castellan-dev/castellan/agent/logcheck"
)

// LogChecker proves that certificates are in the CA's witnessed issuance
// log; *logcheck.Checker implements it.
type LogChecker interface {
	// Prove returns one error per certificate, nil for a proven one.
	Prove(ctx context.Context, certs []logcheck.Cert) []error
	// Monitor proves certificates in the background and alarms on failures.
	Monitor(ctx context.Context, certs []logcheck.Cert, describe func(i int) []any)
}

// enforceLog keeps, under --log-policy enforce, only the records whose
// certificates are proven to be in the witnessed log; the others fail
// (the identity keeps its current SVID and retries with backoff).
func (m *Manager) enforceLog(ctx context.Context, recs []cache.Record, certs []logcheck.Cert) ([]cache.Record, []logcheck.Cert) {
	if m.cfg.LogPolicy != logcheck.Enforce || len(recs) == 0 {
		return recs, certs
	}
	for _, r := range recs {
		if m.ids[r.EntryID].rec.SVID == nil {
			m.log.Info("holding back the first SVID until the issuance log proves it is witnessed (--log-policy enforce)",
				"entry_id", r.EntryID, "spiffe_id", r.SVID.ID.String())
		}
	}
	errs := m.cfg.LogCheck.Prove(ctx, certs)
	var kept []cache.Record
	var keptCerts []logcheck.Cert
	for i, r := range recs {
		if errs[i] != nil {
			m.log.Error("refusing an SVID not proven to be in the witnessed issuance log; keeping the current one",
				"entry_id", r.EntryID, "spiffe_id", r.SVID.ID.String(), "serial", serialOf(r).String(), "error", errs[i].Error())
			m.fail(r.EntryID, errs[i])
			continue
		}
		kept, keptCerts = append(kept, r), append(keptCerts, certs[i])
	}
	return kept, keptCerts
}

// monitorLog, under --log-policy monitor, has the served records'
// certificates proven in the background, alarming on failures.
func (m *Manager) monitorLog(ctx context.Context, recs []cache.Record, certs []logcheck.Cert) {
	if m.cfg.LogPolicy != logcheck.Monitor || len(recs) == 0 {
		return
	}
	m.cfg.LogCheck.Monitor(ctx, certs, func(i int) []any {
		return []any{"entry_id", recs[i].EntryID, "spiffe_id", recs[i].SVID.ID.String(), "serial", serialOf(recs[i]).String()}
	})
}
