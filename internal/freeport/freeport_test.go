package freeport

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestPortsAreDistinct: a thousand calls never return the same port twice,
// never one in the kernel's ephemeral range, and never one being listened on.
func TestPortsAreDistinct(t *testing.T) {
	lo, hi := candidates()
	seen := map[int]bool{}
	for range 1000 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		if p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		seen[p] = true
	}
}

// TestBusyPortSkipped: a port something listens on is never handed out.
func TestBusyPortSkipped(t *testing.T) {
	lo, hi := candidates()
	var held []net.Listener
	busy := map[int]bool{}
	for p := lo; p < hi && len(held) < 200; p += (hi - lo) / 200 {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			held = append(held, l)
			busy[p] = true
		}
	}
	t.Cleanup(func() {
		for _, l := range held {
			l.Close()
		}
	})
	if len(held) == 0 {
		t.Fatal("could not listen on any candidate port")
	}
	for range 2000 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if busy[p] {
			t.Fatalf("port %d is being listened on but was handed out", p)
		}
	}
}

// TestOtherProcessesClaimsHonoured: ports claimed by a child process are not
// handed to this one while the child lives.
func TestOtherProcessesClaimsHonoured(t *testing.T) {
	if os.Getenv("FREEPORT_CHILD") != "" {
		for range 500 {
			p, err := Port()
			if err != nil {
				os.Exit(2)
			}
			os.Stdout.WriteString(strconv.Itoa(p) + "\n")
		}
		os.Stdout.Close()
		time.Sleep(time.Minute) // hold the claims until killed
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOtherProcessesClaimsHonoured$")
	cmd.Env = append(os.Environ(), "FREEPORT_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	childPorts := map[int]bool{}
	var buf [1 << 16]byte
	var data []byte
	for {
		n, err := out.Read(buf[:])
		data = append(data, buf[:n]...)
		if err != nil {
			break
		}
	}
	start := 0
	for i, c := range data {
		if c == '\n' {
			p, err := strconv.Atoi(string(data[start:i]))
			if err != nil {
				t.Fatalf("child printed %q", data[start:i])
			}
			childPorts[p] = true
			start = i + 1
		}
	}
	if len(childPorts) != 500 {
		t.Fatalf("child claimed %d ports, want 500", len(childPorts))
	}
	for range 3000 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if childPorts[p] {
			t.Fatalf("port %d claimed by the child was handed out here", p)
		}
	}
}

// TestRangeConsecutive: Range's ports are consecutive and each claimed.
func TestRangeConsecutive(t *testing.T) {
	base, err := Range(6)
	if err != nil {
		t.Fatal(err)
	}
	for range 2000 {
		p, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if p >= base && p < base+6 {
			t.Fatalf("port %d of a claimed range handed out again", p)
		}
	}
}
