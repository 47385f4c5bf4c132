package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/index"
	"github.com/castellan-dev/castellan/ca/ledger/logfile"
)

// damagePages overwrites the element tables of n leaf pages of entries from
// the middle of the file outward: the damage an operator meets after a bad
// disk or a bad copy.
func damagePages(t testing.TB, path string, n int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := int(binary.LittleEndian.Uint32(data[16+8:]))
	pages := len(data) / ps
	damaged := 0
	// Leaf pages of entries only, from the middle outward: damage to a
	// branch or index page hides whole subtrees depending on how the file
	// happened to be laid out (how commits batched), which made the
	// salvage assertions flaky.
	for i := 0; i < pages && damaged < n; i++ {
		p := pages/2 + (i+1)/2*(1-2*(i%2))
		if p < 2 || p >= pages {
			continue
		}
		page := data[p*ps : (p+1)*ps]
		if binary.LittleEndian.Uint16(page[8:]) != 0x02 || !strings.Contains(string(page), `{"v":1,"index":`) {
			continue
		}
		copy(data[p*ps+16:], strings.Repeat("\xde\xad\xbe\xef", 16))
		damaged++
	}
	if damaged < n {
		t.Fatalf("found %d leaf pages of entries to damage, want %d", damaged, n)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A damaged page is ErrDamaged naming the file and what to do, never a
// bbolt panic (which, for a ledger, happens on bbolt's own goroutine
// while it rebuilds the freelist, and used to crash the server).
func TestOpenDamagedLedgerNamesTheFile(t *testing.T) {
	path, vkey, _ := tamperable(t, 3000)
	damagePages(t, path, 8)
	l, err := Open(path, Config{})
	if err == nil {
		l.Close()
		t.Fatal("Open of a damaged ledger succeeded")
	}
	for _, want := range []string{path, "damaged", "restore the file from a backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !errors.Is(err, entry.ErrDamaged) {
		t.Errorf("error %v is not ErrDamaged", err)
	}
	// VerifyFile reports the damage as a finding (exit 3 in castellanctl).
	rep, err := logfile.VerifyFile(path, vkey)
	if err != nil || rep.OK() || !strings.Contains(strings.Join(rep.Findings, ";"), path) {
		t.Fatalf("VerifyFile = %+v, %v; want a finding naming %s", rep, err, path)
	}
}

// Read-only for forensics, the damaged ledger opens; reads either work
// or fail with ErrDamaged, and writes fail with ErrReadOnly.
func TestForensicOpenOfDamagedLedger(t *testing.T) {
	path, _, _ := tamperable(t, 3000)
	damagePages(t, path, 8)
	l, err := Open(path, Config{ReadOnly: true})
	if err != nil {
		t.Fatalf("forensic Open: %v", err)
	}
	defer l.Close()
	ctx := context.Background()
	if l.Size() != 3000 {
		t.Errorf("Size = %d, want 3000", l.Size())
	}
	read, missing := 0, 0
	for i := range uint64(3000) {
		_, err := l.Entry(ctx, i)
		switch {
		case err == nil:
			read++
		case errors.Is(err, entry.ErrDamaged) && strings.Contains(err.Error(), "missing"):
			missing++
		default:
			t.Fatalf("Entry(%d) = %v; want the entry, or ErrDamaged saying it is missing", i, err)
		}
	}
	if read < 2000 {
		t.Fatalf("%d entries read and %d missing; want those on sound pages read", read, missing)
	}
	if _, _, err := l.List(ctx, index.Filter{}, 100, ""); err != nil {
		t.Fatalf("List of a salvaged ledger: %v", err)
	}
	if _, err := l.Append(ctx, certEvent(9999, "spiffe://td/x", "n", time.Now().Add(time.Hour))); !errors.Is(err, entry.ErrReadOnly) {
		t.Fatalf("Append = %v, want ErrReadOnly", err)
	}
	if _, err := l.Revoke(ctx, "1000", "test"); !errors.Is(err, entry.ErrReadOnly) {
		t.Fatalf("Revoke = %v, want ErrReadOnly", err)
	}
	if _, err := l.Prune(ctx); !errors.Is(err, entry.ErrReadOnly) {
		t.Fatalf("Prune = %v, want ErrReadOnly", err)
	}
}

// An intact ledger reopens; the integrity check passes on it.
func TestReopenIntactLedger(t *testing.T) {
	path, _, _ := tamperable(t, 1000)
	l, err := Open(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Size() != 1000 {
		t.Fatalf("Size = %d", l.Size())
	}
}
