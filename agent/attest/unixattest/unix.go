// Package unixattest is the workload attestor for plain processes: it
// describes the peer of a connection by its uid and gid (SO_PEERCRED) and
// by the executable it runs (path and sha256), as unix selectors.
package unixattest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/state"
)

// maxHashCache bounds the executable hash cache; past it the cache is
// emptied and refilled, which only costs rehashing.
const maxHashCache = 4096

// Attestor is the attestor for plain processes. It produces the selectors
// unix:uid:N, unix:gid:N (from SO_PEERCRED), unix:path:/abs/exe (the target
// of /proc/PID/exe) and unix:sha256:<hex> (of the executable the process
// runs, read through /proc/PID/exe so a replaced file on disk does not
// matter). Hashes are cached by (device, inode, size, mtime, ctime), so a
// busy socket does not rehash the same binary. The zero value is not usable;
// use New.
type Attestor struct {
	procRoot string

	mu     sync.Mutex
	hashes map[fileKey]*hashCall
}

// hashCall is one hash computation; concurrent attestations of the same
// executable wait for it instead of hashing it again.
type hashCall struct {
	done chan struct{}
	sum  string
	err  error
}

type fileKey struct {
	dev, ino    uint64
	size        int64
	mtime, ctim syscall.Timespec
}

// New returns a unix attestor reading /proc.
func New() *Attestor { return &Attestor{procRoot: "/proc", hashes: map[fileKey]*hashCall{}} }

// BindsProcess reports true: unix selectors name the executable and the
// credentials, so a binding also checks that neither changed.
func (u *Attestor) BindsProcess() bool { return true }

// Attest returns the unix selectors of p. It fails if p.Process is nil
// or the process exits before its executable has been read.
//
// If the peer holds the connection through a descriptor that is not
// close-on-exec (p.Binding.Inheritable), the executable it runs may not
// be the one that connected: a program can connect, keep the descriptor
// across execve and run a trusted binary. Only unix:uid and unix:gid, which
// SO_PEERCRED fixed at connect time, are returned then.
func (u *Attestor) Attest(ctx context.Context, p peer.Peer) ([]state.Selector, error) {
	if p.Process == nil {
		return nil, &peer.Error{Reason: peer.ReasonPin, Err: fmt.Errorf("peer %d is not pinned", p.PID)}
	}
	ids := []state.Selector{
		{Type: "unix", Value: "uid:" + strconv.FormatUint(uint64(p.UID), 10)},
		{Type: "unix", Value: "gid:" + strconv.FormatUint(uint64(p.GID), 10)},
	}
	if p.Binding != nil && p.Binding.Inheritable() {
		return ids, p.Process.Alive()
	}
	exe := u.procRoot + "/" + strconv.Itoa(p.PID) + "/exe"
	path, err := os.Readlink(exe)
	if err != nil {
		return nil, u.exeError(p, fmt.Errorf("read executable path: %w", err))
	}
	sum, err := u.hash(ctx, exe)
	if err != nil {
		return nil, u.exeError(p, err)
	}
	// The PID was read twice above; the pinned process being alive now
	// proves it was not reused in between.
	if err := p.Process.Alive(); err != nil {
		return nil, err
	}
	return append(ids,
		state.Selector{Type: "unix", Value: "path:" + path},
		state.Selector{Type: "unix", Value: "sha256:" + sum},
	), nil
}

// exeError reports an executable read failure, or the process's exit if that
// is why the read failed.
func (u *Attestor) exeError(p peer.Peer, err error) error {
	if alive := p.Process.Alive(); alive != nil {
		return alive
	}
	return &peer.Error{Reason: peer.ReasonExe, Err: err}
}

// hash returns the hex sha256 of the file at path, from the cache when the
// file's identity and modification times are unchanged.
func (u *Attestor) hash(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open executable: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat executable: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("stat executable: no device and inode")
	}
	key := fileKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctim: st.Ctim}
	u.mu.Lock()
	call, ok := u.hashes[key]
	if !ok {
		if len(u.hashes) >= maxHashCache {
			clear(u.hashes)
		}
		call = &hashCall{done: make(chan struct{})}
		u.hashes[key] = call
	}
	u.mu.Unlock()
	if ok {
		select {
		case <-call.done:
			return call.sum, call.err
		case <-ctx.Done():
			return "", fmt.Errorf("hash executable: %w", ctx.Err())
		}
	}
	h := sha256.New()
	_, err = io.Copy(h, ctxReader{ctx, f})
	if err != nil {
		call.err = fmt.Errorf("hash executable: %w", err)
		u.mu.Lock()
		delete(u.hashes, key) // do not cache a failure
		u.mu.Unlock()
	} else {
		call.sum = hex.EncodeToString(h.Sum(nil))
	}
	close(call.done)
	return call.sum, call.err
}

// ctxReader stops a long read when its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
