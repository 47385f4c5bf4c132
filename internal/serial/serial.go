// Package serial owns the certificate serial number as Castellan writes it
// everywhere: in the ledger, on the wire (proto strings), in revocation
// lists pushed to agents and in logs. There is one canonical form,
// lower-case hexadecimal without leading zeros ("2ab", never "02AB"), and
// one parser for the forms people type. Comparing serials as strings is
// only sound between values of this type; that is what it is for.
package serial

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// MaxDigits is the longest serial Parse accepts, in significant hex
// digits: 20 octets, the limit RFC 5280 (section 4.1.2.2) sets for
// certificate serial numbers.
const MaxDigits = 40

// maxInput bounds the text Parse will look at, leading zeros, colons and
// spaces included, so that a flood of zeros is refused before it is read.
const maxInput = 256

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid serial number")

// Number is a certificate serial number. The zero Number is "no serial"
// (an SVID not yet issued); IsZero reports it.
type Number struct {
	hex string // canonical form; "" for the zero Number
}

// FromBig returns the serial number n, as read from an x509.Certificate.
// A nil n gives the zero Number.
func FromBig(n *big.Int) Number {
	if n == nil {
		return Number{}
	}
	return Number{hex: n.Text(16)}
}

// Parse reads a serial number in any of the forms an operator may type or
// a tool may print: hexadecimal in either case, with or without leading
// zeros, an optional "0x" prefix, and colons between bytes (as openssl
// prints them), with surrounding spaces ignored. Signs, other separators
// and more than MaxDigits significant digits are refused.
func Parse(s string) (Number, error) {
	if len(s) > maxInput {
		return Number{}, fmt.Errorf("%w: %d characters, want at most %d hexadecimal digits", ErrInvalid, len(s), MaxDigits)
	}
	t := strings.TrimSpace(s)
	if len(t) > 1 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X') {
		t = t[2:]
	}
	t = strings.ReplaceAll(t, ":", "")
	if t == "" {
		return Number{}, fmt.Errorf("%w: %q is empty; want hexadecimal digits such as 3f0a", ErrInvalid, s)
	}
	for i := 0; i < len(t); i++ {
		if !isHex(t[i]) {
			return Number{}, fmt.Errorf("%w: %q has %q, not a hexadecimal digit; want e.g. 3f0a or 3F:0A", ErrInvalid, s, t[i])
		}
	}
	t = strings.TrimLeft(strings.ToLower(t), "0")
	if len(t) > MaxDigits {
		return Number{}, fmt.Errorf("%w: %q has %d significant digits, want at most %d (20 octets)", ErrInvalid, s, len(t), MaxDigits)
	}
	if t == "" {
		t = "0"
	}
	return Number{hex: t}, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// String returns the canonical form: lower-case hex without leading zeros
// ("" for the zero Number).
func (n Number) String() string { return n.hex }

// IsZero reports whether n is the zero Number (no serial).
func (n Number) IsZero() bool { return n.hex == "" }

// Big returns n as an integer, for encoding into certificates and CRLs.
// It returns nil for the zero Number.
func (n Number) Big() *big.Int {
	if n.hex == "" {
		return nil
	}
	b, _ := new(big.Int).SetString(n.hex, 16) // every Number holds valid hex
	return b
}

// MarshalText returns the canonical form, so that a Number logs (slog) and
// encodes (JSON) as the same string String returns.
func (n Number) MarshalText() ([]byte, error) { return []byte(n.hex), nil }
