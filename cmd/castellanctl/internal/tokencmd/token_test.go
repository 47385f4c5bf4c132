package tokencmd

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestTokenFileIsNewAndOwnerOnly: --out writes a 0600 file even under a
// permissive umask, and never overwrites or follows an existing path.
func TestTokenFileIsNewAndOwnerOnly(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "tok")
	if err := writeTokenFile(path, "cjt_x"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v (%v), want 0600", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != "cjt_x\n" {
		t.Fatalf("token file holds %q", b)
	}
	if err := writeTokenFile(path, "cjt_y"); err == nil || !strings.Contains(err.Error(), "must not exist") {
		t.Fatalf("existing file: %v; want refused", err)
	}
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := writeTokenFile(link, "cjt_z"); err == nil {
		t.Fatal("wrote through a dangling symlink")
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("symlink target was created: %v", err)
	}
}
