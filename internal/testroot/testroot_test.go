package testroot

import (
	"os"
	"testing"
)

func TestRequireLetsRootThrough(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Setenv(EnvRequire, "")
		ran := false
		t.Run("skips", func(t *testing.T) { Require(t, "test"); ran = true })
		if ran {
			t.Fatal("Require did not stop a non-root test")
		}
		return
	}
	Require(t, "test") // must neither skip nor fail as root
	if t.Skipped() || t.Failed() {
		t.Fatal("Require stopped a test running as root")
	}
}
