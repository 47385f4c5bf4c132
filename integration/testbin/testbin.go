// Package testbin gives integration tests the project's real binaries.
//
// `make test` builds them into bin/ and passes that directory in
// CASTELLAN_BIN; a plain `go test` builds the one asked for into a
// temporary directory, once per test process.
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Builder builds command binaries from ./cmd/<name> on demand. The zero
// value is ready to use; a Builder is safe for concurrent use.
type Builder struct {
	mu    sync.Mutex
	dir   string
	built map[string]string
}

// Path returns the path of the named binary (for example "castellan-server"),
// building it first if CASTELLAN_BIN does not hold it. It fails the test if
// the binary cannot be had.
func (b *Builder) Path(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv("CASTELLAN_BIN"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.built[name]; ok {
		return p
	}
	if b.dir == "" {
		dir, err := os.MkdirTemp("", "castellan-testbin-")
		if err != nil {
			t.Fatalf("testbin: %v", err)
		}
		b.dir = dir
		b.built = map[string]string{}
	}
	p := filepath.Join(b.dir, name)
	pkg := "github.com/castellan-dev/castellan/cmd/" + name
	if out, err := exec.Command("go", "build", "-o", p, pkg).CombinedOutput(); err != nil {
		t.Fatalf("testbin: go build %s: %v\n%s", pkg, err, out)
	}
	b.built[name] = p
	return p
}

// Cleanup removes binaries built by b; call it from TestMain after m.Run.
func (b *Builder) Cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
		b.dir, b.built = "", nil
	}
}

// RepoRoot returns the repository's root directory, found from this file's
// location, for tests that need paths such as deploy/.
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("testbin: cannot locate source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}
