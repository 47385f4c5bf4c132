// Package hop describes one service-to-service call of Bookinfo as both
// ends saw it: the certificate the server presented (read by the client
// from its TLS connection state) and the certificate the client presented
// (read by the server and reported back in response headers).
//
// The product page renders the hops of a request so a user can watch the
// certificates rotate; the end-to-end test reads the same values.
package hop

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Response headers by which a server reports the client certificate it saw.
const (
	HeaderClientID       = "X-Bookinfo-Client-Spiffe-Id"
	HeaderClientSerial   = "X-Bookinfo-Client-Serial"
	HeaderClientNotAfter = "X-Bookinfo-Client-Not-After"
	HeaderClientIssuer   = "X-Bookinfo-Client-Issuer"
)

// Cert is what one end of a hop saw of the other end's leaf certificate.
type Cert struct {
	// SPIFFEID is the certificate's URI SAN.
	SPIFFEID string `json:"spiffe_id"`
	// Serial is the serial number in lowercase hexadecimal.
	Serial string `json:"serial"`
	// NotAfter is when the certificate expires.
	NotAfter time.Time `json:"not_after"`
	// Issuer is the SHA-256 fingerprint (lowercase hexadecimal) of the CA
	// certificate the peer presented after its leaf: the intermediate that
	// signed it, as `castellanctl authority list` shows it. It tells which
	// CA authority a peer is using, e.g. across a CA rotation. Empty when
	// the peer sent its leaf alone.
	Issuer string `json:"issuer,omitempty"`
}

// Hop is one call from service From to service To.
type Hop struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Server is the certificate To presented, as From saw it.
	Server Cert `json:"server"`
	// Client is the certificate From presented, as To saw it.
	Client Cert `json:"client"`
	// Error, if not empty, says why the call failed.
	Error string `json:"error,omitempty"`
}

// CertOf describes a leaf X.509-SVID. A certificate that is not an SVID
// (no single spiffe URI SAN) is reported with an empty SPIFFEID.
func CertOf(leaf *x509.Certificate) Cert {
	c := Cert{Serial: leaf.SerialNumber.Text(16), NotAfter: leaf.NotAfter.UTC()}
	if id, err := x509svid.IDFromCert(leaf); err == nil {
		c.SPIFFEID = id.String()
	}
	return c
}

// PeerCert describes the peer's leaf certificate of a TLS connection,
// with the fingerprint of the certificate that follows it in the chain
// the peer presented.
func PeerCert(cs *tls.ConnectionState) (Cert, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return Cert{}, errors.New("hop: connection has no peer certificate")
	}
	c := CertOf(cs.PeerCertificates[0])
	if len(cs.PeerCertificates) > 1 {
		sum := sha256.Sum256(cs.PeerCertificates[1].Raw)
		c.Issuer = hex.EncodeToString(sum[:])
	}
	return c, nil
}

// ReportClient wraps h so that every response carries the client
// certificate of the request's TLS connection (and its issuer's
// fingerprint) in the X-Bookinfo-Client-* headers. Requests without a
// client certificate pass through unchanged.
func ReportClient(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := PeerCert(r.TLS); err == nil {
			w.Header().Set(HeaderClientID, c.SPIFFEID)
			w.Header().Set(HeaderClientSerial, c.Serial)
			w.Header().Set(HeaderClientNotAfter, c.NotAfter.Format(time.RFC3339))
			if c.Issuer != "" {
				w.Header().Set(HeaderClientIssuer, c.Issuer)
			}
		}
		h.ServeHTTP(w, r)
	})
}

// FromResponse builds the hop from → to of a completed HTTPS response: the
// server's certificate from resp.TLS and the client's from the headers the
// server set with ReportClient.
func FromResponse(from, to string, resp *http.Response) (Hop, error) {
	h := Hop{From: from, To: to}
	server, err := PeerCert(resp.TLS)
	if err != nil {
		return h, err
	}
	h.Server = server
	notAfter, err := time.Parse(time.RFC3339, resp.Header.Get(HeaderClientNotAfter))
	if err != nil {
		return h, fmt.Errorf("hop: %s did not report the client certificate it saw: %w", to, err)
	}
	h.Client = Cert{
		SPIFFEID: resp.Header.Get(HeaderClientID),
		Serial:   resp.Header.Get(HeaderClientSerial),
		NotAfter: notAfter,
		Issuer:   resp.Header.Get(HeaderClientIssuer),
	}
	return h, nil
}
