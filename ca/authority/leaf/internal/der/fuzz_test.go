package der

import (
	"bytes"
	"encoding/binary"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// node is one element of a structure FuzzWriter builds: constructed
// (children) or primitive (content), or an INTEGER, a time or TRUE.
type node struct {
	op       byte
	tag      byte
	content  []byte
	when     time.Time
	children []*node
}

// Ops of the little language FuzzWriter reads its structures from.
const (
	opOpen = iota
	opClose
	opBytes
	opRepeat
	opInt
	opUTCTime
	opGeneralizedTime
	opTrue
	opCount
)

// Bounds on one program, so that no input takes the fuzzer's memory or
// time: the content bytes it may ask for (still enough for three length
// octets), how deep elements nest, and how many ops are read.
const (
	maxFuzzContent = 1<<17 + 1000
	maxFuzzDepth   = 32
	maxFuzzOps     = 256
)

// parseProgram reads prog as a sequence of ops into a tree under a root
// SEQUENCE; unclosed elements are closed at the end.
func parseProgram(prog []byte) *node {
	root := &node{op: opOpen, tag: TagSequence}
	stack := []*node{root}
	budget := maxFuzzContent
	for ops := 0; len(prog) >= 2 && ops < maxFuzzOps; ops++ {
		op, arg := prog[0]%opCount, prog[1]
		prog = prog[2:]
		top := stack[len(stack)-1]
		n := &node{op: op, tag: arg}
		switch op {
		case opOpen:
			if len(stack) == maxFuzzDepth {
				continue
			}
			n.tag |= Constructed
			stack = append(stack, n)
		case opClose:
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		case opBytes, opInt:
			k := min(int(arg), len(prog))
			n.content, prog = prog[:k], prog[k:]
			n.tag = TagOctetString
		case opRepeat:
			if len(prog) < 2 {
				continue
			}
			k := min(int(binary.BigEndian.Uint16(prog))*4, budget)
			budget -= k
			n.content, n.tag, prog = bytes.Repeat([]byte{arg}, k), TagOctetString, prog[2:]
		case opUTCTime, opGeneralizedTime:
			if len(prog) < 8 {
				continue
			}
			secs := int64(binary.BigEndian.Uint64(prog)) % (1 << 38)
			n.when, prog = time.Unix(secs, int64(arg)*3_900_000).In(time.FixedZone("", int(arg)*60)), prog[8:]
		}
		top.children = append(top.children, n)
	}
	return root
}

// write writes n with w.
func (n *node) write(w *Writer) {
	switch n.op {
	case opOpen:
		start := w.Open(n.tag)
		for _, c := range n.children {
			c.write(w)
		}
		w.Close(start)
	case opBytes, opRepeat:
		w.Element(n.tag, n.content)
	case opInt:
		w.PositiveInt(new(big.Int).SetBytes(n.content))
	case opUTCTime:
		w.UTCTime(n.when)
	case opGeneralizedTime:
		w.GeneralizedTime(n.when)
	case opTrue:
		w.True()
	}
}

// build writes n with cryptobyte.
func (n *node) build(b *cryptobyte.Builder) {
	switch n.op {
	case opOpen:
		b.AddASN1(cbasn1.Tag(n.tag), func(b *cryptobyte.Builder) {
			for _, c := range n.children {
				c.build(b)
			}
		})
	case opBytes, opRepeat:
		b.AddASN1(cbasn1.Tag(n.tag), func(b *cryptobyte.Builder) { b.AddBytes(n.content) })
	case opInt:
		v := new(big.Int).SetBytes(n.content)
		if v.Sign() == 0 {
			b.SetError(errSentinel) // PositiveInt refuses zero
			return
		}
		b.AddASN1BigInt(v)
	case opUTCTime:
		b.AddASN1UTCTime(n.when.UTC())
	case opGeneralizedTime:
		b.AddASN1GeneralizedTime(n.when.UTC())
	case opTrue:
		b.AddASN1Boolean(true)
	}
}

// FuzzWriter is the differential test of Writer: a structure read from
// the input (nested elements of any tag, contents from empty to 256 KiB
// so every length form occurs, INTEGERs, times of any year and zone,
// BOOLEANs) is written with Writer and with cryptobyte.Builder, which the
// leaf encoder used before; both must produce the same bytes or both
// refuse.
func FuzzWriter(f *testing.F) {
	f.Add([]byte{opOpen, 0x10, opBytes, 3, 'a', 'b', 'c', opClose, 0, opTrue, 0})
	f.Add([]byte{opOpen, 0x03, opRepeat, 0xa5, 0x00, 0x20, opOpen, 0x11, opRepeat, 1, 0x40, 0x00, opClose, 0, opInt, 2, 0x80, 0x01})
	f.Add([]byte{opUTCTime, 30, 0, 0, 0, 0, 0x70, 0, 0, 0, opGeneralizedTime, 200, 0, 0, 0, 0x3f, 0, 0, 0, 0})
	f.Add([]byte{opInt, 0, opOpen, 0x1f, opClose, 0})
	f.Add([]byte{opRepeat, 0, 0xff, 0xff, opOpen, 0, opRepeat, 9, 0x00, 0x1f, opRepeat, 9, 0x00, 0x20})
	f.Fuzz(func(t *testing.T, prog []byte) {
		tree := parseProgram(prog)
		var w Writer
		tree.write(&w)
		got, err := w.Bytes()
		var b cryptobyte.Builder
		tree.build(&b)
		want, wantErr := b.Bytes()
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("Writer error %v, cryptobyte error %v", err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Writer wrote %d bytes, cryptobyte %d; first difference at %d", len(got), len(want), firstDifference(got, want))
		}
	})
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
