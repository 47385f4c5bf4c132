package procstat

import (
	"os"
	"testing"
	"time"
)

// TestParseCPUCountsFromTheLastParenthesis: a command name with spaces and
// parentheses does not shift the fields; utime+stime are summed in ticks.
func TestParseCPUCountsFromTheLastParenthesis(t *testing.T) {
	line := "4242 (a) b (c) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 9 0 100 0 0"
	got, err := parseCPU(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3800 * time.Millisecond; got != want {
		t.Fatalf("CPU = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "4242 no paren", "4242 (x) S 1 2", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 x 1"} {
		if _, err := parseCPU(bad); err == nil {
			t.Errorf("parseCPU(%q) succeeded", bad)
		}
	}
}

// TestCPUOfThisProcessGrows: burning CPU shows in CPU(own pid).
func TestCPUOfThisProcessGrows(t *testing.T) {
	before, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		x := 0
		for i := range 10_000_000 {
			x += i
		}
		_ = x
		after, err := CPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after-before >= 50*time.Millisecond {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU went from %v to %v over 5 s of busy loop", before, after)
		}
	}
}
