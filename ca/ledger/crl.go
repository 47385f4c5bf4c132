package ledger

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/castellan-dev/castellan/internal/serial"
)

// DefaultCRLValidity is how long a published CRL is valid (NextUpdate -
// ThisUpdate); it is re-signed at half that age or on any revocation.
const DefaultCRLValidity = 24 * time.Hour

// CRLHandler builds and serves the certificate revocation list of the
// ledger's revoked, unexpired certificates, signed by the issuing CA. GET
// returns DER (application/pkix-crl), or PEM with ?format=pem. It is safe
// for concurrent use.
type CRLHandler struct {
	l        *Ledger
	issuer   *x509.Certificate
	key      crypto.Signer
	validity time.Duration

	mu      sync.Mutex
	der     []byte
	builtAt time.Time
	revCh   <-chan struct{} // RevocationsChanged when der was built
}

// NewCRLHandler returns a handler for CRLs signed by key, the private key
// of issuer (the intermediate that signs the SVIDs). validity 0 means
// DefaultCRLValidity.
func NewCRLHandler(l *Ledger, issuer *x509.Certificate, key crypto.Signer, validity time.Duration) *CRLHandler {
	if validity <= 0 {
		validity = DefaultCRLValidity
	}
	return &CRLHandler{l: l, issuer: issuer, key: key, validity: validity}
}

// CRL returns the current DER CRL, re-signing it when a revocation changed
// or half its validity has passed.
func (h *CRLHandler) CRL(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.l.clock()
	if h.der != nil && now.Sub(h.builtAt) < h.validity/2 && !closed(h.revCh) {
		return h.der, nil
	}
	ch := h.l.RevocationsChanged()
	revs := h.l.Revocations(now)
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now,
		NextUpdate: now.Add(h.validity),
	}
	for _, r := range revs {
		n, err := serial.Parse(r.Serial)
		if err != nil {
			continue
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: n.Big(), RevocationTime: r.Time, ReasonCode: reasonCode(r.Reason),
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, h.issuer, h.key)
	if err != nil {
		return nil, fmt.Errorf("ledger: sign CRL: %w", err)
	}
	h.der, h.builtAt, h.revCh = der, now, ch
	return der, nil
}

// ServeHTTP serves the CRL.
func (h *CRLHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	der, err := h.CRL(r.Context())
	if err != nil {
		h.l.log.Error("CRL generation failed", "error", err)
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

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// reasonCode maps a revocation reason to its RFC 5280 CRLReason code
// (unspecified when the reason is free text).
func reasonCode(reason string) int {
	key := strings.ToLower(strings.NewReplacer("_", "", "-", "", " ", "").Replace(reason))
	codes := map[string]int{
		"keycompromise": 1, "cacompromise": 2, "affiliationchanged": 3, "superseded": 4,
		"cessationofoperation": 5, "certificatehold": 6, "privilegewithdrawn": 9,
	}
	return codes[key]
}
