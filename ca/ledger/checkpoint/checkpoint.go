// Package checkpoint is the ledger's signed checkpoints: the tree head
// in the transparency-log checkpoint format signed with the log key,
// stored so that every replica serves the latest one, and the witnessed
// checkpoint (the same with witnesses' cosignatures).
package checkpoint

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/ledger/tree"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Checkpoints signs, stores and serves a ledger's checkpoints. The
// functions that keep it up to date (Note, Last, Sign, Store) are functions, not
// methods, so that they are not promoted to the Ledger that embeds it.
type Checkpoints struct {
	c Config

	mu      sync.Mutex
	last    []byte // latest signed checkpoint
	lastLen uint64 // its tree size
}

// Config is what Checkpoints need of their ledger.
type Config struct {
	// Origin names the log; Signer signs its checkpoints; Verifier checks
	// them.
	Origin   string
	Signer   note.Signer
	Verifier note.Verifier
	// View and Update run read and read-write transactions of the store.
	View, Update func(context.Context, func(store.Tx) error) error
	// Ctx is the ledger's lifetime; Log receives operational logs.
	Ctx context.Context
	Log *slog.Logger
	// ReadOnly: forensic mode, nothing is written. Shared: other replicas
	// append to the store too.
	ReadOnly, Shared bool
	// Published returns the size of the log as published; Closed
	// whether the ledger is closed.
	Published func() uint64
	Closed    func() bool
}

// New returns the checkpoints of a ledger, none known yet.
func New(c Config) *Checkpoints { return &Checkpoints{c: c} }

// Checkpoint returns a signed checkpoint (a note in the transparency-log
// checkpoint format: origin, size, base64 root hash, then the log's
// signature) of the tree as stored, which on a shared store includes every
// replica's appends. The latest checkpoint is also stored; a checkpoint
// of a smaller tree never replaces it. Signatures are deterministic
// (Ed25519), so every replica returns the same bytes for one tree.
func (c *Checkpoints) Checkpoint(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cp, err := c.cached(); cp != nil || err != nil {
		return cp, err
	}
	var head tree.Head
	var stored []byte
	err := c.c.View(ctx, func(tx store.Tx) error {
		var err error
		head, err = tree.Read(tx)
		stored = bytes.Clone(tree.Bucket(tx, tree.Meta).Get(tree.KeyCheckpoint))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: checkpoint: %w", err)
	}
	if stored != nil && Size(stored) >= head.Size {
		Note(c, stored)
		return stored, nil
	}
	signed, err := Sign(c, head)
	if err != nil || c.c.ReadOnly {
		return signed, err // read-only: the file is not written
	}
	if signed, err = Store(c, ctx, signed, head.Size); err != nil {
		return nil, err
	}
	Note(c, signed)
	return signed, nil
}

// cached returns the latest checkpoint if it is known to cover the whole
// log: only on a store of its own, where the published head is the
// stored one. ErrClosed once closed.
func (c *Checkpoints) cached() ([]byte, error) {
	if c.c.Closed() {
		return nil, entry.ErrClosed
	}
	size := c.c.Published()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.c.Shared && c.last != nil && c.lastLen == size {
		return c.last, nil
	}
	return nil, nil
}

// Sign signs the checkpoint of head.
func Sign(c *Checkpoints, head tree.Head) ([]byte, error) {
	root, err := head.Root()
	if err != nil {
		return nil, err
	}
	text := log.Checkpoint{Origin: c.c.Origin, Size: head.Size, Hash: root}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(text)}, c.c.Signer)
	if err != nil {
		return nil, fmt.Errorf("ledger: sign checkpoint: %w", err)
	}
	return signed, nil
}

// Store stores signed (of a tree of size) unless the stored
// checkpoint is at least as large, and returns the checkpoint now stored.
func Store(c *Checkpoints, ctx context.Context, signed []byte, size uint64) ([]byte, error) {
	out := signed
	err := c.c.Update(ctx, func(tx store.Tx) error {
		meta := tree.Bucket(tx, tree.Meta)
		if old := meta.Get(tree.KeyCheckpoint); old != nil && Size(old) >= size {
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
func (c *Checkpoints) StoredCheckpoint() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Note records cp, a checkpoint signed or read from the store, if it is
// of a larger tree than the latest known.
func Note(c *Checkpoints, cp []byte) {
	if cp == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || Size(cp) > c.lastLen {
		c.last, c.lastLen = cp, Size(cp)
	}
}

// Last returns the latest checkpoint known (nil if none).
func Last(c *Checkpoints) []byte { return c.StoredCheckpoint() }

// Size reads the size line of a checkpoint note without
// verifying it (0 if unreadable).
func Size(cp []byte) uint64 {
	lines := bytes.SplitN(cp, []byte("\n"), 3)
	if len(lines) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(string(lines[1]), 10, 64)
	return n
}
