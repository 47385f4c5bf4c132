package ledger

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/store"
)

// TestAppendGrowingTheFileDoesNotWaitForReaders: appends that grow the
// ledger file by megabytes complete while a read transaction stays open
// (bbolt remaps a file that outgrows its mapping only once every reader
// is done, so a ledger mapped at its file's size would stall issuance
// behind a long export).
func TestAppendGrowingTheFileDoesNotWaitForReaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	inView, release, viewDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		viewDone <- l.db.View(context.Background(), func(store.Tx) error {
			close(inView)
			<-release
			return nil
		})
	}()
	<-inView
	defer func() { close(release); <-viewDone }()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	appended := make(chan error, 1)
	go func() {
		evs := make([]entry.Event, 100)
		for b := range 300 { // until the file grew by 2 MiB: bbolt grows it 16 MiB ahead
			for i := range evs {
				evs[i] = benchEvent(uint64(b*len(evs) + i + 1))
			}
			if _, err := l.Append(context.Background(), evs...); err != nil {
				appended <- err
				return
			}
			if fi, err := os.Stat(path); err == nil && fi.Size() >= before.Size()+2<<20 {
				break
			}
		}
		appended <- nil
	}()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("appends growing the file waited for an open read transaction for 30 s")
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() < before.Size()+1<<20 {
		t.Fatalf("the file grew from %d to %d bytes: the appends did not grow it enough to need a larger mapping", before.Size(), after.Size())
	}
}
