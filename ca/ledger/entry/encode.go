package entry

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The leaf encoding written by hand: Encode appends exactly the bytes
// json.Marshal gives for a wireEntry (the fixed field order, omitempty,
// encoding/json's escaping) without reflection. A string that needs any
// escaping is handed to json.Marshal itself, so only strings of plain
// printable ASCII take the direct path. TestEncodeMatchesMarshal and
// FuzzEncode hold the two equal.

// Encode returns the leaf data for ev at index.
func Encode(index uint64, ev *Event) ([]byte, error) {
	return AppendEncoded(nil, index, ev)
}

// AppendEncoded appends the leaf data for ev at index to dst (which it
// grows at most once) and returns the extended slice.
func AppendEncoded(dst []byte, index uint64, ev *Event) ([]byte, error) {
	dst = growFor(dst, ev)
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, wireVersion, 10)
	dst = append(dst, `,"index":`...)
	dst = strconv.AppendUint(dst, index, 10)
	var err error
	if dst, err = appendMember(dst, `,"kind":`, string(ev.Kind), false); err != nil {
		return nil, fmt.Errorf("ledger: encode entry %d: %w", index, err)
	}
	dst = appendTimeMember(dst, `,"time":`, ev.Time, false)
	for _, m := range []struct {
		name, s string
	}{{`,"serial":`, ev.Serial}, {`,"spiffe_id":`, ev.SPIFFEID}, {`,"node":`, ev.Node}} {
		if dst, err = appendMember(dst, m.name, m.s, true); err != nil {
			return nil, fmt.Errorf("ledger: encode entry %d: %w", index, err)
		}
	}
	dst = appendTimeMember(dst, `,"not_before":`, ev.NotBefore, true)
	dst = appendTimeMember(dst, `,"not_after":`, ev.NotAfter, true)
	if dst, err = appendMember(dst, `,"public_key_sha256":`, ev.PublicKeySHA256, true); err != nil {
		return nil, fmt.Errorf("ledger: encode entry %d: %w", index, err)
	}
	if len(ev.CertDER) > 0 {
		dst = append(dst, `,"cert":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, ev.CertDER)
		dst = append(dst, '"')
	}
	for _, m := range []struct {
		name, s string
	}{{`,"reason":`, ev.Reason}, {`,"parent":`, ev.Parent}} {
		if dst, err = appendMember(dst, m.name, m.s, true); err != nil {
			return nil, fmt.Errorf("ledger: encode entry %d: %w", index, err)
		}
	}
	return append(dst, '}'), nil
}

// SizeHint returns the size of ev's encoding when its strings need no
// escaping (escaped strings are longer): the members' names and
// punctuation (under 200 bytes), the strings, three times and the
// base64 certificate.
func SizeHint(ev *Event) int {
	return 200 + 3*len(time.RFC3339Nano) + base64.StdEncoding.EncodedLen(len(ev.CertDER)) +
		len(ev.Kind) + len(ev.Serial) + len(ev.SPIFFEID) + len(ev.Node) + len(ev.PublicKeySHA256) +
		len(ev.Reason) + len(ev.Parent)
}

// growFor makes room in dst for SizeHint(ev) more bytes (at least
// doubling it when it must move, so that filling one buffer with many
// entries copies it a few times at most).
func growFor(dst []byte, ev *Event) []byte {
	n := SizeHint(ev)
	if cap(dst)-len(dst) >= n {
		return dst
	}
	out := make([]byte, len(dst), max(len(dst)+n, 2*cap(dst)))
	copy(out, dst)
	return out
}

// appendMember appends name and s as a JSON string, as encoding/json
// writes them; nothing when omitEmpty and s is empty.
func appendMember(dst []byte, name, s string, omitEmpty bool) ([]byte, error) {
	if omitEmpty && s == "" {
		return dst, nil
	}
	dst = append(dst, name...)
	if plain(s) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"'), nil
	}
	q, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return append(dst, q...), nil
}

// plain reports whether encoding/json writes s as it is between quotes:
// printable ASCII other than the quote, the backslash and the three
// characters it escapes for HTML (<, >, &).
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendTimeMember appends name and FormatTime(t) as a JSON string;
// nothing when omitEmpty and t is zero. RFC 3339 text is plain (digits,
// '-', ':', '.', 'T', 'Z', '+').
func appendTimeMember(dst []byte, name string, t time.Time, omitEmpty bool) []byte {
	if omitEmpty && t.IsZero() {
		return dst
	}
	dst = append(dst, name...)
	dst = append(dst, '"')
	if !t.IsZero() {
		dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	}
	return append(dst, '"')
}
