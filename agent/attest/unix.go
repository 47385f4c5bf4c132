package attest

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

	"github.com/castellan-dev/castellan/agent/state"
)

// maxHashCache bounds the executable hash cache; past it the cache is
// emptied and refilled, which only costs rehashing.
const maxHashCache = 4096

// Unix is the attestor for plain processes. It produces the selectors
// unix:uid:N, unix:gid:N (from SO_PEERCRED), unix:path:/abs/exe (the target
// of /proc/PID/exe) and unix:sha256:<hex> (of the executable the process
// runs, read through /proc/PID/exe so a replaced file on disk does not
// matter). Hashes are cached by (device, inode, size, mtime, ctime), so a
// busy socket does not rehash the same binary. The zero value is not usable;
// use NewUnix.
type Unix struct {
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

// NewUnix returns a Unix attestor reading /proc.
func NewUnix() *Unix { return &Unix{procRoot: "/proc", hashes: map[fileKey]*hashCall{}} }

// BindsProcess reports true: unix selectors name the executable and the
// credentials, so a binding also checks that neither changed.
func (u *Unix) BindsProcess() bool { return true }

// Attest returns the unix selectors of peer. It fails if peer.Process is nil
// or the process exits before its executable has been read.
//
// If the peer holds the connection through a descriptor that is not
// close-on-exec (peer.Binding.Inheritable), the executable it runs may not
// be the one that connected: a program can connect, keep the descriptor
// across execve and run a trusted binary. Only unix:uid and unix:gid, which
// SO_PEERCRED fixed at connect time, are returned then.
func (u *Unix) Attest(ctx context.Context, peer Peer) ([]state.Selector, error) {
	if peer.Process == nil {
		return nil, &Error{Reason: ReasonPin, Err: fmt.Errorf("peer %d is not pinned", peer.PID)}
	}
	ids := []state.Selector{
		{Type: "unix", Value: "uid:" + strconv.FormatUint(uint64(peer.UID), 10)},
		{Type: "unix", Value: "gid:" + strconv.FormatUint(uint64(peer.GID), 10)},
	}
	if peer.Binding != nil && peer.Binding.Inheritable() {
		return ids, peer.Process.Alive()
	}
	exe := u.procRoot + "/" + strconv.Itoa(peer.PID) + "/exe"
	path, err := os.Readlink(exe)
	if err != nil {
		return nil, u.exeError(peer, fmt.Errorf("read executable path: %w", err))
	}
	sum, err := u.hash(ctx, exe)
	if err != nil {
		return nil, u.exeError(peer, err)
	}
	// The PID was read twice above; the pinned process being alive now
	// proves it was not reused in between.
	if err := peer.Process.Alive(); err != nil {
		return nil, err
	}
	return append(ids,
		state.Selector{Type: "unix", Value: "path:" + path},
		state.Selector{Type: "unix", Value: "sha256:" + sum},
	), nil
}

// exeError reports an executable read failure, or the process's exit if that
// is why the read failed.
func (u *Unix) exeError(peer Peer, err error) error {
	if alive := peer.Process.Alive(); alive != nil {
		return alive
	}
	return &Error{Reason: ReasonExe, Err: err}
}

// hash returns the hex sha256 of the file at path, from the cache when the
// file's identity and modification times are unchanged.
func (u *Unix) hash(ctx context.Context, path string) (string, error) {
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
