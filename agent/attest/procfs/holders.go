package procfs

import (
	"context"
	"errors"
	"fmt"
	"github.com/castellan-dev/castellan/internal/clock"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Scanner finds which processes hold given sockets, by reading every
// process's descriptor table under /proc (/proc/PID/fd of each thread-group
// leader). A scan costs one readlink per open descriptor on the node, so
// scans are shared: every caller waiting for a scan at least as recent as it
// needs is answered by the same one, and one scan looks for every socket
// registered with Watch. It is safe for concurrent use.
//
// A scan sees descriptor tables, not descriptors in flight in SCM_RIGHTS
// messages nor tables private to a non-leader thread of another process;
// and it is not atomic: a descriptor moved from a process not yet read to
// one already read is missed. The binding (agent/attest/peer) does not
// rely on it alone.
type Scanner struct {
	procRoot string
	clock    clock.Clock

	runs atomic.Int64 // scans run, for tests

	mu      sync.Mutex
	watched map[uint64]int // socket inode -> watchers
	last    *scan          // the latest finished scan
	running *scan
}

// scan is one pass over /proc; done closes when holders and err are set.
type scan struct {
	started time.Time
	watched map[uint64]bool
	holders map[uint64][]int
	err     error
	done    chan struct{}
}

// ScannerConfig configures NewScanner; its zero value scans /proc on the
// wall clock.
type ScannerConfig struct {
	// ProcRoot is the /proc directory to read ("": /proc).
	ProcRoot string
	// Clock dates the scans (nil: the wall clock).
	Clock clock.Clock
}

// NewScanner returns a scanner as cfg says.
func NewScanner(cfg ScannerConfig) *Scanner {
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	return &Scanner{procRoot: cfg.ProcRoot, clock: clock.OrSystem(cfg.Clock), watched: map[uint64]int{}}
}

// ProcRoot returns the /proc directory the scanner reads.
func (s *Scanner) ProcRoot() string { return s.procRoot }

// Now returns the time on the scanner's clock, the clock scans are dated
// with.
func (s *Scanner) Now() time.Time { return s.clock.Now() }

// Watch makes scans look for socket ino until the returned function is
// called.
func (s *Scanner) Watch(ino uint64) (unwatch func()) {
	s.mu.Lock()
	s.watched[ino]++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.watched[ino]--; s.watched[ino] <= 0 {
				delete(s.watched, ino)
			}
			s.mu.Unlock()
		})
	}
}

// Holders returns the PIDs of the processes whose descriptor tables held
// socket ino during a scan that started at or after notBefore, running one
// if none qualifies. ino must be watched.
func (s *Scanner) Holders(ctx context.Context, ino uint64, notBefore time.Time) ([]int, error) {
	for {
		s.mu.Lock()
		if s.watched[ino] == 0 {
			s.mu.Unlock()
			return nil, fmt.Errorf("socket %d is not watched", ino)
		}
		if r := s.last; r != nil && r.serves(ino, notBefore) {
			s.mu.Unlock()
			return r.holders[ino], r.err
		}
		r := s.running
		if r == nil {
			r = &scan{started: s.clock.Now(), watched: make(map[uint64]bool, len(s.watched)), done: make(chan struct{})}
			for i := range s.watched {
				r.watched[i] = true
			}
			s.running = r
			s.mu.Unlock()
			r.holders, r.err = s.run(r.watched)
			s.mu.Lock()
			s.last, s.running = r, nil
			s.mu.Unlock()
			close(r.done)
		} else {
			s.mu.Unlock()
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a descriptor scan: %w", ctx.Err())
		}
		if r.serves(ino, notBefore) {
			return r.holders[ino], r.err
		}
	}
}

func (r *scan) serves(ino uint64, notBefore time.Time) bool {
	return r.watched[ino] && !r.started.Before(notBefore)
}

// run reads every process's descriptor table once.
func (s *Scanner) run(watched map[uint64]bool) (map[uint64][]int, error) {
	s.runs.Add(1)
	holders := map[uint64][]int{}
	if len(watched) == 0 {
		return holders, nil
	}
	d, err := os.Open(s.procRoot)
	if err != nil {
		return nil, fmt.Errorf("scan processes: %w", err)
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close()
	if err != nil {
		return nil, fmt.Errorf("scan processes: %w", err)
	}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		err = scanFDs(s.procRoot+"/"+name+"/fd", func(_ int, ino uint64) {
			if watched[ino] {
				holders[ino] = append(holders[ino], pid)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return holders, nil
}

// scanFDs calls found with every socket descriptor in the descriptor
// directory dir (/proc/PID/fd or /proc/PID/task/TID/fd). A process that
// exits meanwhile is skipped; a table the agent may not read is an error,
// since an unread table could hold the connection.
func scanFDs(dir string, found func(fd int, ino uint64)) error {
	d, err := os.Open(dir)
	if err != nil {
		if gone(err) {
			return nil
		}
		return fmt.Errorf("read descriptor table %s: %w (the agent needs root or CAP_SYS_PTRACE to see who holds a connection)", dir, err)
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close()
	if err != nil {
		if gone(err) {
			return nil
		}
		return fmt.Errorf("read descriptor table %s: %w", dir, err)
	}
	var buf [64]byte
	path := make([]byte, 0, len(dir)+12)
	for _, name := range names {
		path = append(append(append(path[:0], dir...), '/'), name...)
		n, err := unix.Readlink(string(path), buf[:])
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := socketInode(buf[:n]); ok {
			fd, _ := strconv.Atoi(name)
			found(fd, ino)
		}
	}
	return nil
}

// socketInode parses a descriptor link "socket:[INODE]".
func socketInode(link []byte) (uint64, bool) {
	const prefix = "socket:["
	if len(link) < len(prefix)+2 || string(link[:len(prefix)]) != prefix || link[len(link)-1] != ']' {
		return 0, false
	}
	ino, err := strconv.ParseUint(string(link[len(prefix):len(link)-1]), 10, 64)
	return ino, err == nil
}

// gone reports whether err means the process went away.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)
}
