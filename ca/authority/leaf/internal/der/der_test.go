package der

import (
	"bytes"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestCloseMatchesCryptobyteAtLengthBoundaries writes elements whose
// contents sit on each side of every change of DER's length form (short
// form up to 127, then one to three length octets), alone and nested in
// two more elements, and requires cryptobyte's bytes.
func TestCloseMatchesCryptobyteAtLengthBoundaries(t *testing.T) {
	for _, n := range []int{0, 1, 126, 127, 128, 129, 255, 256, 257, 65533, 65535, 65536, 1<<16 + 300} {
		content := bytes.Repeat([]byte{0xa5}, n)
		var w Writer
		outer := w.Open(TagSequence)
		mid := w.Open(ContextSpecific | Constructed | 3)
		w.Element(TagOctetString, content)
		w.Close(mid)
		w.Close(outer)
		got, err := w.Bytes()
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(content)
			})
		})
		want := b.BytesOrPanic()
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes of content: header %x, cryptobyte's %x", n, got[:min(12, len(got))], want[:min(12, len(want))])
		}
	}
}

// TestPositiveIntMatchesCryptobyte compares INTEGER encodings at the
// edges: one byte, the high bit set (0x00 prefix), a serial's 128 and
// 160 bits; and refuses zero, negatives and nil.
func TestPositiveIntMatchesCryptobyte(t *testing.T) {
	one := big.NewInt(1)
	for _, n := range []*big.Int{
		one, big.NewInt(0x7f), big.NewInt(0x80), big.NewInt(0xff), big.NewInt(0x100), big.NewInt(0x7fff), big.NewInt(0x8000),
		new(big.Int).Lsh(one, 127), new(big.Int).Sub(new(big.Int).Lsh(one, 128), one), new(big.Int).Lsh(one, 159),
		new(big.Int).Sub(new(big.Int).Lsh(one, 160), one), new(big.Int).Lsh(one, 1100),
	} {
		var w Writer
		w.PositiveInt(n)
		got, err := w.Bytes()
		var b cryptobyte.Builder
		b.AddASN1BigInt(n)
		if want := b.BytesOrPanic(); err != nil || !bytes.Equal(got, want) {
			t.Errorf("PositiveInt(%x) = %x, %v; cryptobyte %x", n, got, err, want)
		}
	}
	for _, n := range []*big.Int{nil, big.NewInt(0), big.NewInt(-1), big.NewInt(-0x80)} {
		var w Writer
		w.PositiveInt(n)
		if _, err := w.Bytes(); err == nil {
			t.Errorf("PositiveInt(%v) was accepted", n)
		}
	}
}

// TestTimesMatchCryptobyte compares UTCTime and GeneralizedTime with
// cryptobyte's at the edges of the years each can hold, with
// sub-second parts (dropped) and a time given in another zone (written
// in UTC), and requires the same refusals.
func TestTimesMatchCryptobyte(t *testing.T) {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	times := []time.Time{
		time.Date(1949, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2030, 1, 2, 3, 4, 5, 999999999, time.UTC), time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2050, 1, 1, 5, 0, 0, 0, zone),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for _, tm := range times {
		for _, generalized := range []bool{false, true} {
			var w Writer
			var b cryptobyte.Builder
			if generalized {
				w.GeneralizedTime(tm)
				b.AddASN1GeneralizedTime(tm.UTC())
			} else {
				w.UTCTime(tm)
				b.AddASN1UTCTime(tm.UTC())
			}
			got, err := w.Bytes()
			want, wantErr := b.Bytes()
			if (err == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
				t.Errorf("%v (generalized %v): %q, %v; cryptobyte %q, %v", tm, generalized, got, err, want, wantErr)
			}
		}
	}
}

// TestWriterRefusesMisuse: a Close without its Open, an element left
// open, a high tag number and a SmallInt over 127 are errors, and the
// first error sticks.
func TestWriterRefusesMisuse(t *testing.T) {
	cases := map[string]func(w *Writer){
		"close without open":  func(w *Writer) { w.Close(0) },
		"close out of range":  func(w *Writer) { w.Open(TagSequence); w.Close(5) },
		"element left open":   func(w *Writer) { w.Open(TagSequence) },
		"one close too many":  func(w *Writer) { s := w.Open(TagSequence); w.Close(s); w.Close(s) },
		"high tag number":     func(w *Writer) { w.Element(0x1f, nil) },
		"small int over 127":  func(w *Writer) { w.SmallInt(128) },
		"error then elements": func(w *Writer) { w.SetError(errSentinel); w.Element(TagOctetString, []byte{1}) },
	}
	for name, write := range cases {
		var w Writer
		write(&w)
		if got, err := w.Bytes(); err == nil {
			t.Errorf("%s: Bytes = %x, no error", name, got)
		}
	}
	var w Writer
	w.SetError(errSentinel)
	w.SmallInt(200)
	if _, err := w.Bytes(); err != errSentinel {
		t.Errorf("first error = %v, want the sentinel", err)
	}
}

var errSentinel = errors.New("sentinel")

// TestWriterAllocatesNothingWithRoom writes a certificate-shaped
// structure into a buffer with room for it: no allocation at all, the
// point of this package.
func TestWriterAllocatesNothingWithRoom(t *testing.T) {
	buf := make([]byte, 0, 1024)
	serial := new(big.Int).Lsh(big.NewInt(1), 127)
	value := bytes.Repeat([]byte{7}, 300)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	allocs := testing.AllocsPerRun(100, func() {
		var w Writer
		w.Reset(buf)
		seq := w.Open(TagSequence)
		w.SmallInt(2)
		w.PositiveInt(serial)
		w.UTCTime(now)
		w.GeneralizedTime(now)
		w.True()
		w.StringElement(ContextSpecific|6, "spiffe://example.org/ns/default/sa/workload")
		w.Element(TagOctetString, value)
		w.Close(seq)
		if _, err := w.Bytes(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per structure; want 0", allocs)
	}
}
