package logentry_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/tlog/logentry"
)

const (
	payments = "spiffe://example.org/ns/payments/sa/api"
	shop     = "spiffe://example.org/ns/shop/sa/web"
)

// newLedger opens a new ledger file, the writer of the entries Decode reads.
func newLedger(t *testing.T) *ledger.Ledger {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "log.key")
	if _, err := logkey.GenerateKeyFile(keyFile, "example.org/castellan/ledger"); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Config{KeyFile: keyFile, Origin: "example.org/castellan/ledger"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// issuance returns an issuance event for a real certificate of id.
func issuance(t *testing.T, id, node string) entry.Event {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x1001), NotBefore: now.Add(-time.Minute),
		NotAfter: now.Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return entry.Event{Kind: entry.KindIssuance, Serial: c.SerialNumber.Text(16), SPIFFEID: id, Node: node,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, PublicKeySHA256: hex.EncodeToString(sum[:]), CertDER: der}
}

// Decode refuses every entry that is not a well-formed version 1
// entry at its own index describing its own certificate.
func TestDecodeRefusesMalformedEntries(t *testing.T) {
	l := newLedger(t)
	ev := issuance(t, payments, "node-a")
	if _, err := l.Append(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	good, err := l.Entry(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := logentry.Decode(good.Data, 0); err != nil {
		t.Fatalf("the ledger's own entry: %v", err)
	}
	data := string(good.Data)
	swap := func(old, new string) string {
		if !strings.Contains(data, old) {
			t.Fatalf("entry %s has no %q", data, old)
		}
		return strings.Replace(data, old, new, 1)
	}
	for _, c := range []struct {
		name, data string
		index      uint64
		msg        string
	}{
		{"not JSON", "{", 0, "is not a JSON object"},
		{"a JSON array", "[1]", 0, "is not a JSON object"},
		{"version 2", swap(`"v":1`, `"v":2`), 0, "has format version 2; this monitor reads version 1"},
		{"no version", swap(`"v":1,`, ``), 0, "has format version none"},
		{"moved", data, 7, "entry at index 7 says it is at index 0"},
		{"no kind", swap(`"kind":"issuance"`, `"kind":""`), 0, "has no kind"},
		{"bad time", swap(`"time":"`, `"time":"yesterday`), 0, "time \"yesterday"},
		{"bad base64", swap(`"cert":"`, `"cert":"*`), 0, "is not standard base64"},
		{"no certificate", swap(`"cert":"`, `"x":"`), 0, "no certificate"},
		{"other serial", swap(`"serial":"`+ev.Serial, `"serial":"ff`+ev.Serial), 0, "the certificate's serial is " + ev.Serial},
		{"other expiry", swap(ev.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), "2099-01-01T00:00:00Z"), 0, "the certificate is valid"},
		{"other key", swap(ev.PublicKeySHA256, strings.Repeat("0", 64)), 0, "public key hash"},
		{"other identity", swap(`"spiffe_id":"`+payments, `"spiffe_id":"`+shop), 0, "URI SANs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := logentry.Decode([]byte(c.data), c.index)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Decode = %v; want an error saying %q", err, c.msg)
			}
		})
	}
}
