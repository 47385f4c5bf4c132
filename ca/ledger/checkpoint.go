package ledger

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Checkpoint returns a signed checkpoint (a note in the transparency-log
// checkpoint format: origin, size, base64 root hash, then the log's
// signature) of the tree as stored, which on a shared store includes every
// replica's appends. The latest checkpoint is also stored; a checkpoint
// of a smaller tree never replaces it. Signatures are deterministic
// (Ed25519), so every replica returns the same bytes for one tree.
func (l *Ledger) Checkpoint(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cp, err := l.cachedCheckpoint(); cp != nil || err != nil {
		return cp, err
	}
	var head tree.Head
	var stored []byte
	err := l.view(ctx, func(tx store.Tx) error {
		var err error
		head, err = tree.Read(tx)
		stored = bytes.Clone(tree.Bucket(tx, tree.Meta).Get(tree.KeyCheckpoint))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: checkpoint: %w", err)
	}
	if stored != nil && checkpointSize(stored) >= head.Size {
		l.noteStored(stored, 0)
		return stored, nil
	}
	signed, err := l.sign(head)
	if err != nil || l.readOnly {
		return signed, err // read-only: the file is not written
	}
	if signed, err = l.storeCheckpoint(ctx, signed, head.Size); err != nil {
		return nil, err
	}
	l.noteStored(signed, 0)
	return signed, nil
}

// cachedCheckpoint returns the latest checkpoint if it is known to cover
// the whole log: only on a store of its own, where the published head is
// the stored one. ErrClosed once closed.
func (l *Ledger) cachedCheckpoint() ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, entry.ErrClosed
	}
	if !l.shared && l.lastCP != nil && l.lastCPLen == l.head.Size {
		return l.lastCP, nil
	}
	return nil, nil
}

// sign signs the checkpoint of head.
func (l *Ledger) sign(head tree.Head) ([]byte, error) {
	root, err := head.Root()
	if err != nil {
		return nil, err
	}
	text := log.Checkpoint{Origin: l.origin, Size: head.Size, Hash: root}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(text)}, l.signer)
	if err != nil {
		return nil, fmt.Errorf("ledger: sign checkpoint: %w", err)
	}
	return signed, nil
}

// storeCheckpoint stores signed (of a tree of size) unless the stored
// checkpoint is at least as large, and returns the checkpoint now stored.
func (l *Ledger) storeCheckpoint(ctx context.Context, signed []byte, size uint64) ([]byte, error) {
	out := signed
	err := l.db.Update(ctx, func(tx store.Tx) error {
		meta := tree.Bucket(tx, tree.Meta)
		if old := meta.Get(tree.KeyCheckpoint); old != nil && checkpointSize(old) >= size {
			out = bytes.Clone(old)
			return nil
		}
		out = signed
		return meta.Put(tree.KeyCheckpoint, signed)
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: store checkpoint: %w", err)
	}
	return out, nil
}

// StoredCheckpoint returns the latest checkpoint this ledger signed or
// read from the store, or nil if none was ever signed. On a shared store
// another replica may have stored a later one since (Checkpoint reads it).
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
