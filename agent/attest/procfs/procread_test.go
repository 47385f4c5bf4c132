package procfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestReadProcReadsWholeCurrentFiles(t *testing.T) {
	// A file larger than the first buffer is read whole.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readProc(path)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("readProc of a %d-byte file: %d bytes, %v", len(big), len(got), err)
	}
	// /proc files are generated at each read: moving a descriptor's offset
	// shows in the next read of its fdinfo.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fdinfo := "/proc/self/fdinfo/" + strconv.Itoa(int(f.Fd()))
	for _, pos := range []int64{0, 100, 7} {
		if _, err := f.Seek(pos, 0); err != nil {
			t.Fatal(err)
		}
		data, err := readProc(fdinfo)
		if err != nil || !strings.Contains(string(data), "pos:\t"+strconv.FormatInt(pos, 10)+"\n") {
			t.Fatalf("fdinfo after seeking to %d: %q, %v", pos, data, err)
		}
	}
	// A process that is gone reads as gone.
	if _, err := readProc("/proc/999999999/status"); !gone(err) {
		t.Fatalf("readProc of a missing process: %v; want an error gone() recognises", err)
	}
	if _, err := readProc(filepath.Join(t.TempDir(), "none")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("readProc of a missing file: %v", err)
	}
}
