// Package der writes DER (ITU-T X.690) into one byte slice, for the leaf
// encoder of ca/authority/leaf. Unlike cryptobyte.Builder, which takes a
// closure and allocates a child builder for every constructed element, a
// Writer opens an element with Open, appends its contents and fixes its
// length with Close: building a whole certificate costs no allocation
// beyond the slice itself (none when its capacity suffices).
//
// Lengths are always in DER's minimal form: Close writes a length under
// 128 in the placeholder byte Open left, and otherwise moves the contents
// up by the one to four bytes the long form needs. The first error (an
// unbalanced Close, a value DER cannot hold) sticks: later calls do
// nothing and Bytes returns it.
package der

import (
	"errors"
	"fmt"
	"math/big"
)

// Universal tags the leaf encoder writes, and the class and form bits
// of an identifier octet.
const (
	TagBoolean         = 0x01
	TagInteger         = 0x02
	TagBitString       = 0x03
	TagOctetString     = 0x04
	TagUTCTime         = 0x17
	TagGeneralizedTime = 0x18
	TagSequence        = 0x30 // constructed
	ContextSpecific    = 0x80
	Constructed        = 0x20
)

const (
	highTagNumber       = 0x1f // low five bits of a multi-octet identifier
	shortFormLengthMax  = 0x7f
	longFormLengthFlag  = 0x80
	maxLengthOctets     = 4
	generalizedYearsMax = 9999
)

// Writer appends DER to a byte slice. The zero Writer is ready to use;
// Reset gives it a slice with room for what it will write.
type Writer struct {
	buf  []byte
	open int // elements opened and not yet closed
	err  error
}

// Reset makes w write into buf[:0] (buf's capacity is reused) and clears
// its error.
func (w *Writer) Reset(buf []byte) {
	*w = Writer{buf: buf[:0]}
}

// Len is the number of bytes written so far.
func (w *Writer) Len() int { return len(w.buf) }

// Bytes returns what was written, or the first error. It is an error to
// call it with an element still open.
func (w *Writer) Bytes() ([]byte, error) {
	if w.err == nil && w.open != 0 {
		w.err = fmt.Errorf("der: %d elements left open", w.open)
	}
	if w.err != nil {
		return nil, w.err
	}
	return w.buf, nil
}

// SetError records err unless an error is recorded already.
func (w *Writer) SetError(err error) {
	if w.err == nil {
		w.err = err
	}
}

// Err is the first error recorded.
func (w *Writer) Err() error { return w.err }

// Written returns the bytes written from offset from on (an offset Open
// returned, or Len), shared with w: valid until w writes again.
func (w *Writer) Written(from int) []byte { return w.buf[from:] }

// Open starts an element with tag whose contents follow; Close(the value
// returned) ends it. Tags of the high-tag-number form (low five bits all
// set) are refused, as cryptobyte refuses them.
func (w *Writer) Open(tag byte) int {
	if tag&highTagNumber == highTagNumber {
		w.SetError(fmt.Errorf("der: high-tag-number form %#x is not supported", tag))
	}
	start := len(w.buf)
	w.buf = append(w.buf, tag, 0)
	w.open++
	return start
}

// Close ends the element Open returned start for, writing the length of
// what was appended since.
func (w *Writer) Close(start int) {
	if w.err != nil {
		return
	}
	if start < 0 || start+2 > len(w.buf) || w.open == 0 {
		w.err = errors.New("der: Close without a matching Open")
		return
	}
	w.open--
	body := start + 2
	n := len(w.buf) - body
	if n <= shortFormLengthMax {
		w.buf[start+1] = byte(n)
		return
	}
	k := lengthOctets(n)
	if k > maxLengthOctets {
		w.err = fmt.Errorf("der: element of %d bytes is too long", n)
		return
	}
	var pad [maxLengthOctets]byte
	w.buf = append(w.buf, pad[:k]...)
	copy(w.buf[body+k:], w.buf[body:body+n])
	w.buf[start+1] = longFormLengthFlag | byte(k)
	for i := range k {
		w.buf[body+i] = byte(n >> (8 * (k - 1 - i)))
	}
}

// lengthOctets is the number of octets of n in base 256.
func lengthOctets(n int) int {
	k := 1
	for n > 0xff {
		n >>= 8
		k++
	}
	return k
}

// Raw appends b, a complete encoding (or contents) written elsewhere.
func (w *Writer) Raw(b []byte) { w.buf = append(w.buf, b...) }

// RawString appends s as bytes.
func (w *Writer) RawString(s string) { w.buf = append(w.buf, s...) }

// Byte appends one content byte.
func (w *Writer) Byte(b byte) { w.buf = append(w.buf, b) }

// Element appends tag and contents as one primitive element.
func (w *Writer) Element(tag byte, contents []byte) {
	start := w.Open(tag)
	w.Raw(contents)
	w.Close(start)
}

// StringElement appends tag and s as one primitive element.
func (w *Writer) StringElement(tag byte, s string) {
	start := w.Open(tag)
	w.RawString(s)
	w.Close(start)
}

// True appends the BOOLEAN TRUE (DER: 0xff).
func (w *Writer) True() { w.buf = append(w.buf, TagBoolean, 1, 0xff) }

// SmallInt appends a non-negative INTEGER under 128.
func (w *Writer) SmallInt(v uint8) {
	if v > shortFormLengthMax {
		w.SetError(fmt.Errorf("der: SmallInt %d is over 127", v))
		return
	}
	w.buf = append(w.buf, TagInteger, 1, v)
}

// PositiveInt appends n, which must be positive, as an INTEGER: its
// big-endian bytes without leading zeros, after a 0x00 when the first has
// its high bit set (so that it does not read as negative).
func (w *Writer) PositiveInt(n *big.Int) {
	if n == nil || n.Sign() <= 0 {
		w.SetError(errors.New("der: PositiveInt of a number that is not positive"))
		return
	}
	bits := n.BitLen()
	size := (bits + 7) / 8
	start := w.Open(TagInteger)
	if bits%8 == 0 {
		w.buf = append(w.buf, 0)
	}
	at := len(w.buf)
	w.buf = append(w.buf, make([]byte, size)...)
	n.FillBytes(w.buf[at:])
	w.Close(start)
}
