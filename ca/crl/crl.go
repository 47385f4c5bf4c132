// Package crl serves the CA's certificate revocation list: the revoked,
// unexpired certificates of the ledger, signed by the authority that signs
// SVIDs now. The CA's key stays in ca/authority: the list is signed
// through Signer.SignCRL.
package crl

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/revocation"
	"github.com/castellan-dev/castellan/internal/clock"
	"github.com/castellan-dev/castellan/internal/serial"
)

// DefaultValidity is how long a published CRL is valid (NextUpdate -
// ThisUpdate); it is re-signed at half that age, on any revocation and on
// any change of the signing authority.
const DefaultValidity = 24 * time.Hour

// Source lists revoked certificates; *ledger.Ledger is one.
type Source interface {
	// Revocations returns the certificates revoked and unexpired at now.
	Revocations(now time.Time) []revocation.RevokedCert
	// RevocationsChanged returns a channel closed at the next revocation.
	RevocationsChanged() <-chan struct{}
}

// Signer signs CRLs with the key of the authority that signs now;
// *authority.Authority is one.
type Signer interface {
	// SignCRL signs tmpl and returns the DER CRL.
	SignCRL(tmpl *x509.RevocationList) ([]byte, error)
	// Changed returns a channel closed at the next change of the signing
	// authority (or of the trust bundle).
	Changed() <-chan struct{}
}

// Config tunes a Handler; the zero value is usable.
type Config struct {
	// Validity is NextUpdate - ThisUpdate (0: DefaultValidity).
	Validity time.Duration
	// Clock dates the CRL and decides when it is re-signed (nil: the wall
	// clock).
	Clock clock.Clock
	// Logger receives signing failures (nil: discard).
	Logger *slog.Logger
}

// Handler builds and serves the CRL. GET returns DER
// (application/pkix-crl), or PEM with ?format=pem. It is safe for
// concurrent use.
type Handler struct {
	src    Source
	signer Signer
	cfg    Config

	mu      sync.Mutex
	der     []byte
	builtAt time.Time
	stale   []<-chan struct{} // closed when der no longer holds
}

// New returns a Handler for the revocations of src signed by signer.
func New(src Source, signer Signer, cfg Config) *Handler {
	if cfg.Validity <= 0 {
		cfg.Validity = DefaultValidity
	}
	cfg.Clock = clock.OrSystem(cfg.Clock)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{src: src, signer: signer, cfg: cfg}
}

// CRL returns the current DER CRL, signing it again when a revocation or
// the signing authority changed, or half its validity has passed.
func (h *Handler) CRL(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.cfg.Clock.Now()
	if h.der != nil && now.Sub(h.builtAt) < h.cfg.Validity/2 && !anyClosed(h.stale) {
		return h.der, nil
	}
	// Taken before reading, so a change during signing is seen next time.
	stale := []<-chan struct{}{h.src.RevocationsChanged(), h.signer.Changed()}
	der, err := h.signer.SignCRL(Template(h.src.Revocations(now), now, h.cfg.Validity))
	if err != nil {
		return nil, fmt.Errorf("crl: %w", err)
	}
	h.der, h.builtAt, h.stale = der, now, stale
	return der, nil
}

// Template is the unsigned CRL of revs at now, valid for validity. Its
// Number is now in nanoseconds, so it increases with every list.
func Template(revs []revocation.RevokedCert, now time.Time, validity time.Duration) *x509.RevocationList {
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now,
		NextUpdate: now.Add(validity),
	}
	for _, r := range revs {
		n, err := serial.Parse(r.Serial)
		if err != nil {
			continue // the ledger only records parsed serials
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: n.Big(), RevocationTime: r.Time, ReasonCode: ReasonCode(r.Reason),
		})
	}
	return tmpl
}

// ServeHTTP serves the CRL.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	der, err := h.CRL(r.Context())
	if err != nil {
		h.cfg.Logger.Error("CRL generation failed", "error", err)
		http.Error(w, "CRL unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	if r.URL.Query().Get("format") == "pem" {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_ = pem.Encode(w, &pem.Block{Type: "X509 CRL", Bytes: der})
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(der)
}

func anyClosed(chs []<-chan struct{}) bool {
	for _, ch := range chs {
		select {
		case <-ch:
			return true
		default:
		}
	}
	return false
}

// ReasonCode maps a revocation reason to its RFC 5280 CRLReason code, in
// any case and with or without separators ("keyCompromise",
// "key_compromise", "Key Compromise"); free text is unspecified (0).
func ReasonCode(reason string) int {
	key := strings.ToLower(strings.NewReplacer("_", "", "-", "", " ", "").Replace(reason))
	codes := map[string]int{
		"keycompromise": 1, "cacompromise": 2, "affiliationchanged": 3, "superseded": 4,
		"cessationofoperation": 5, "certificatehold": 6, "privilegewithdrawn": 9,
	}
	return codes[key]
}
