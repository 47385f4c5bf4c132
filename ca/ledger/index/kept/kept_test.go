package kept

import (
	"slices"
	"testing"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
)

// run returns a run of the events [first, first+n), each event's serial
// being its index, so a test can tell which events it got.
func run(first uint64, n int) Run {
	r := Run{First: first, Events: make([]entry.Event, n), Encoded: make([][]byte, n)}
	for i := range r.Events {
		r.Events[i].Serial = string(rune('a' + int(first) + i))
		r.Encoded[i] = []byte(r.Events[i].Serial)
	}
	return r
}

// indices returns the log indices runs hold, checking that each event
// sits at its own index and its encoding beside it.
func indices(t *testing.T, runs []Run) []uint64 {
	t.Helper()
	var out []uint64
	for _, r := range runs {
		for i, ev := range r.Events {
			idx := r.First + uint64(i)
			if ev.Serial != string(rune('a'+int(idx))) || string(r.Encoded[i]) != ev.Serial {
				t.Fatalf("event %q (encoded %q) handed out at index %d", ev.Serial, r.Encoded[i], idx)
			}
			out = append(out, idx)
		}
	}
	return out
}

// TestTakeHandsOutOnlyWhatIsKept: Take hands out exactly the kept events
// from its start on, up to its end or the first gap, and nothing when the
// start is not kept; Forget drops what was indexed; a gap or more than
// Max events drop everything kept.
func TestTakeHandsOutOnlyWhatIsKept(t *testing.T) {
	var k Runs
	k.Add(run(0, 3))
	k.Add(run(3, 2))
	for _, c := range []struct {
		from, to, end uint64
		want          []uint64
	}{
		{0, 10, 5, []uint64{0, 1, 2, 3, 4}},
		{2, 4, 4, []uint64{2, 3}},
		{1, 2, 2, []uint64{1}},
		{4, 5, 5, []uint64{4}},
		{5, 10, 5, nil},
		{3, 3, 3, nil},
	} {
		runs, end := k.Take(c.from, c.to)
		if got := indices(t, runs); end != c.end || !slices.Equal(got, c.want) {
			t.Errorf("Take(%d, %d) = %v up to %d; want %v up to %d", c.from, c.to, got, end, c.want, c.end)
		}
	}
	k.Forget(3) // [0, 3) indexed
	if runs, end := k.Take(0, 5); len(runs) != 0 || end != 0 || k.Len() != 2 {
		t.Fatalf("after Forget(3): Take(0, 5) = %v up to %d, %d kept; want nothing from 0, 2 kept", indices(t, runs), end, k.Len())
	}
	if runs, end := k.Take(3, 5); end != 5 || !slices.Equal(indices(t, runs), []uint64{3, 4}) {
		t.Fatalf("after Forget(3): Take(3, 5) up to %d", end)
	}
	k.Add(run(7, 1)) // a gap after 5: what was kept is dropped
	if _, end := k.Take(3, 5); end != 3 {
		t.Fatal("events kept before a gap were still handed out")
	}
	if runs, end := k.Take(7, 9); end != 8 || !slices.Equal(indices(t, runs), []uint64{7}) {
		t.Fatalf("the append after the gap: up to %d, want [7, 8)", end)
	}
	k.Add(Run{First: 8, Events: make([]entry.Event, Max), Encoded: make([][]byte, Max)}) // too many
	if k.Len() != 0 {
		t.Fatalf("%d events kept past Max", k.Len())
	}
	if _, end := k.Take(7, 9); end != 7 {
		t.Fatal("events were handed out after an overflow dropped them")
	}
}
