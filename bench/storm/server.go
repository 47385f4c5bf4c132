package storm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/castellan-dev/castellan/internal/procstat"

	"github.com/castellan-dev/castellan/internal/freeport"
)

// caProcess is a running castellan-server binary.
type caProcess struct {
	cmd      *exec.Cmd
	addr     string // gRPC
	httpAddr string
	exited   chan struct{} // closed when the process has exited
	exitErr  error         // valid once exited is closed
	tail     *tailBuffer   // the last lines of its log, for errors
}

// serverArgs are the flags castellan-server runs the storm with.
type serverArgs struct {
	bin, dataDir, td string
	ttl              time.Duration
	burst, perHour   int
	pkiFlags         []string
}

// startCA starts castellan-server and waits until it logs that it serves.
func startCA(ctx context.Context, a serverArgs) (*caProcess, error) {
	addr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--trust-domain", a.td, "--data-dir", a.dataDir, "--listen", addr, "--http-listen", httpAddr,
		"--default-ttl", a.ttl.String(), "--max-ttl", (2 * a.ttl).String(), "--agent-ttl", a.ttl.String(),
		"--quota-node-burst", strconv.Itoa(a.burst), "--quota-node-per-hour", strconv.Itoa(a.perHour)}, a.pkiFlags...)
	cmd := exec.Command(a.bin, args...)
	// If this process dies (a failed benchmark, a killed test), the CA
	// must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("storm: start %s: %w", a.bin, err)
	}
	p := &caProcess{cmd: cmd, addr: addr, httpAddr: httpAddr, exited: make(chan struct{}), tail: &tailBuffer{max: 40}}
	serving := make(chan struct{})
	go p.scan(stderr, serving)
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-serving:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("storm: castellan-server exited before serving (%v):\n%s", p.exitErr, p.tail)
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	p.stop()
	return nil, fmt.Errorf("storm: castellan-server did not serve within 60s:\n%s", p.tail)
}

// scan reads the server's JSON log: it signals serving once, and keeps
// the last lines. It must read to the end, or the server would block.
func (p *caProcess) scan(r io.Reader, serving chan<- struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Bytes()
		p.tail.add(string(line))
		if signalled || !bytes.Contains(line, []byte("castellan-server serving")) {
			continue
		}
		var rec struct{ Msg string }
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "castellan-server serving" {
			signalled = true
			close(serving)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// stop ends the server (SIGINT, then SIGKILL after 10s) and waits for it.
func (p *caProcess) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// cpu returns the CPU time (user + system, every thread) the process has
// used.
func (p *caProcess) cpu() (time.Duration, error) {
	return procstat.CPU(p.cmd.Process.Pid)
}

// resetPeakRSS makes the kernel's peak RSS (VmHWM) start again from the
// current RSS, so that peakRSS measures the storm alone.
func (p *caProcess) resetPeakRSS() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0)
}

// peakRSS returns the server's peak resident set (VmHWM) in bytes.
func (p *caProcess) peakRSS() (uint64, error) { return p.status("VmHWM") }

// rss returns the server's resident set (VmRSS) in bytes.
func (p *caProcess) rss() (uint64, error) { return p.status("VmRSS") }

// status reads a size in kB from /proc/PID/status, in bytes.
func (p *caProcess) status(field string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("storm: no %s in /proc/PID/status", field)
}

// heapSampler polls the server's go_memstats_heap_inuse_bytes and keeps
// the highest value seen.
type heapSampler struct {
	peak atomic.Uint64
	errs atomic.Int64
}

// run samples every interval until ctx ends.
func (h *heapSampler) run(ctx context.Context, url string, interval time.Duration) {
	c := &http.Client{Timeout: 5 * time.Second}
	for {
		if v, err := scrapeGauge(ctx, c, url, "go_memstats_heap_inuse_bytes"); err == nil {
			if v > h.peak.Load() {
				h.peak.Store(v)
			}
		} else if ctx.Err() == nil {
			h.errs.Add(1)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// scrapeGauge reads one unlabelled gauge from a Prometheus text endpoint.
func scrapeGauge(ctx context.Context, c *http.Client, url, name string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return uint64(f), err
		}
	}
	return 0, fmt.Errorf("storm: %s not in %s", name, url)
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

// String returns the kept lines.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// dataDir creates the server's data directory (mode 0700) under dir.
func dataDir(dir string) (string, error) {
	d := filepath.Join(dir, "ca")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", err
	}
	return d, nil
}
