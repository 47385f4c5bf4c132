package witness

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// Key algorithm bytes of C2SP signed-note verifier keys.
const (
	algEd25519       = 0x01 // a plain signed-note Ed25519 key (the log's)
	algCosignatureV1 = 0x04 // an Ed25519 tlog-cosignature/v1 key (a witness's)
	algMLDSA44       = 0x06 // an ML-DSA-44 cosignature key (not supported)
)

// cosigSize is the length of a cosignature/v1 Ed25519 signature: an 8-byte
// big-endian timestamp followed by the 64-byte Ed25519 signature.
const cosigSize = 8 + ed25519.SignatureSize

// Key is a witness's public key: an Ed25519 key that signs C2SP
// tlog-cosignature/v1 cosignatures under a key name. It implements
// note.Verifier, so that note.Open checks cosignature lines with it.
type Key struct {
	name string
	id   uint32
	pub  ed25519.PublicKey
	vkey string
}

// ParseKey parses a witness's verifier key in the C2SP vkey form
// "<key name>+<8 hex digits of key ID>+<base64 of 0x04 || 32-byte Ed25519
// public key>", as omniwitness's generate_keys prints it. The key ID must be
// the first four bytes of SHA-256(name || "\n" || 0x04 || public key).
// A plain signed-note Ed25519 key (type 0x01) and an ML-DSA-44 key (0x06)
// are refused with a message saying so.
func ParseKey(vkey string) (*Key, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	idHex, b64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("witness key %q: want <name>+<key id>+<base64 key>", vkey)
	}
	if !validKeyName(name) {
		return nil, fmt.Errorf("witness key %q: key name %q is empty, too long, or has spaces or '+'", vkey, name)
	}
	id, err := strconv.ParseUint(idHex, 16, 32)
	if err != nil || len(idHex) != 8 {
		return nil, fmt.Errorf("witness key %q: key id %q is not 8 hex digits", vkey, idHex)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) == 0 {
		return nil, fmt.Errorf("witness key %q: key is not standard base64", vkey)
	}
	switch raw[0] {
	case algCosignatureV1:
	case algEd25519:
		return nil, fmt.Errorf("witness key %q: this is a plain signed-note Ed25519 key (type 0x01), not a tlog-cosignature/v1 key (type 0x04); use the witness's cosignature key", vkey)
	case algMLDSA44:
		return nil, fmt.Errorf("witness key %q: ML-DSA-44 cosignature keys (type 0x06) are not supported yet; give the witness an Ed25519 cosignature/v1 key", vkey)
	default:
		return nil, fmt.Errorf("witness key %q: unknown key type 0x%02x; want an Ed25519 cosignature/v1 key (0x04)", vkey, raw[0])
	}
	if len(raw) != 1+ed25519.PublicKeySize {
		return nil, fmt.Errorf("witness key %q: an Ed25519 key has %d bytes, not %d", vkey, ed25519.PublicKeySize, len(raw)-1)
	}
	k := &Key{name: name, pub: ed25519.PublicKey(raw[1:]), vkey: vkey}
	k.id = keyID(name, raw)
	if uint32(id) != k.id {
		return nil, fmt.Errorf("witness key %q: key id %s does not match the key (want %08x): the key was mistyped or altered", vkey, idHex, k.id)
	}
	return k, nil
}

// keyID is the tlog-cosignature key ID of a typed key.
func keyID(name string, typedKey []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n'})
	h.Write(typedKey)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// validKeyName reports whether name can name a note key: non-empty UTF-8
// of at most 255 bytes, without spaces or '+'.
func validKeyName(name string) bool {
	return name != "" && len(name) <= 255 && utf8.ValidString(name) &&
		strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

// Name is the key name that prefixes the witness's signature lines.
func (k *Key) Name() string { return k.name }

// KeyHash is the key ID that starts the witness's signatures.
func (k *Key) KeyHash() uint32 { return k.id }

// String returns the key in vkey form.
func (k *Key) String() string { return k.vkey }

// Verify reports whether sig (the timestamp and Ed25519 signature, key ID
// removed) is the witness's cosignature/v1 over the note text msg. A zero
// timestamp or one above 2^63-1 is invalid.
func (k *Key) Verify(msg, sig []byte) bool {
	t, ok := cosigTime(sig)
	if !ok {
		return false
	}
	return ed25519.Verify(k.pub, cosignedMessage(t, msg), sig[8:])
}

// cosigTime returns the timestamp of a cosignature (key ID removed).
func cosigTime(sig []byte) (uint64, bool) {
	if len(sig) != cosigSize {
		return 0, false
	}
	t := binary.BigEndian.Uint64(sig)
	return t, t != 0 && t <= math.MaxInt64
}

// cosignedMessage is what a cosignature/v1 signs: a header line, a time
// line, then the whole checkpoint text.
func cosignedMessage(t uint64, text []byte) []byte {
	m := make([]byte, 0, 40+len(text))
	m = append(m, "cosignature/v1\ntime "...)
	m = strconv.AppendUint(m, t, 10)
	m = append(m, '\n')
	return append(m, text...)
}

// SignatureTime returns the timestamp of a verified signature line.
func SignatureTime(s note.Signature) (time.Time, error) {
	raw, err := base64.StdEncoding.DecodeString(s.Base64)
	if err != nil || len(raw) < 4 {
		return time.Time{}, errors.New("malformed signature")
	}
	t, ok := cosigTime(raw[4:])
	if !ok {
		return time.Time{}, errors.New("malformed cosignature timestamp")
	}
	return time.Unix(int64(t), 0), nil
}
