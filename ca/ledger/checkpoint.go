package ledger

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/transparency-dev/formats/log"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
)

// Checkpoint returns a signed checkpoint (a note in the transparency-log
// checkpoint format: origin, size, base64 root hash, then the log's
// signature) for the current tree. The latest checkpoint is also stored in
// the ledger file.
func (l *Ledger) Checkpoint(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if l.lastCP != nil && l.lastCPLen == l.head.size {
		cp := l.lastCP
		l.mu.Unlock()
		return cp, nil
	}
	head := l.head
	l.mu.Unlock()
	root, err := head.root()
	if err != nil {
		return nil, err
	}
	text := log.Checkpoint{Origin: l.origin, Size: head.size, Hash: root}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(text)}, l.signer)
	if err != nil {
		return nil, fmt.Errorf("ledger: sign checkpoint: %w", err)
	}
	if l.readOnly {
		return signed, nil // the file is not written
	}
	err = l.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if old := meta.Get(kCheckpoint); old != nil && checkpointSize(old) > head.size {
			return nil
		}
		return meta.Put(kCheckpoint, signed)
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: store checkpoint: %w", err)
	}
	l.mu.Lock()
	if head.size >= l.lastCPLen || l.lastCP == nil {
		l.lastCP, l.lastCPLen = signed, head.size
	}
	l.mu.Unlock()
	return signed, nil
}

// StoredCheckpoint returns the latest checkpoint stored in the file, or
// nil if none was ever signed.
func (l *Ledger) StoredCheckpoint() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastCP
}

// checkpointSize reads the size line of a checkpoint note without
// verifying it (0 if unreadable).
func checkpointSize(cp []byte) uint64 {
	lines := bytes.SplitN(cp, []byte("\n"), 3)
	if len(lines) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(string(lines[1]), 10, 64)
	return n
}

// OpenCheckpoint verifies a signed checkpoint against the log's verifier
// key vkey and origin, and returns its contents. It needs only the
// transparency-dev and x/mod libraries, as an auditor's own tool would.
func OpenCheckpoint(signed []byte, origin, vkey string) (*log.Checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("ledger: log verifier key: %w", err)
	}
	if origin == "" {
		origin = v.Name()
	}
	cp, _, _, err := log.ParseCheckpoint(signed, origin, v)
	if err != nil {
		return nil, fmt.Errorf("ledger: checkpoint: %w", err)
	}
	return cp, nil
}
