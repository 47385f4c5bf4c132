// Package ledger is Castellan's issuance ledger: an append-only Merkle-tree
// log of every issuance, renewal, revocation, CA key change, join-token use
// and node ban, stored in bbolt. It is also the durable store of node bans
// and of certificate lineages (agents.go, lineage.go).
//
// Leaves are RFC 6962 leaf hashes of each entry's encoded form; the tree
// state is published as signed checkpoints in the transparency-log
// checkpoint format (golang.org/x/mod/sumdb/note signatures), so an auditor
// holding an old checkpoint can check that the log only grew (Consistency)
// and anyone can check that an entry is in it (InclusionProof). Entries are
// indexed by serial, SPIFFE ID, node and expiry.
//
// Durability: Append returns only after its bbolt transaction is fsync'd;
// concurrent Appends share one transaction (group commit, commit.go). A
// Ledger is safe for concurrent use.
package ledger

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
)

// Defaults applied by Open to zero Options fields.
const (
	DefaultOrigin    = "castellan.local/ledger"
	DefaultRetention = 30 * 24 * time.Hour
)

// Options configures a Ledger.
type Options struct {
	// Clock returns the current time (nil -> time.Now).
	Clock func() time.Time
	// Origin names the log in its checkpoints (first line) and is the name
	// of the generated log key ("" -> DefaultOrigin).
	Origin string
	// Signer signs checkpoints; VerifierKey is its note verifier key
	// ("<name>+<hash>+<key>"), given to auditors. Both set or neither: when
	// neither is set, an Ed25519 log key is loaded from (or generated into)
	// the file path+".key", mode 0600.
	Signer      note.Signer
	VerifierKey string
	// Logger receives one JSON audit line per event, and operational logs
	// (nil -> discard).
	Logger *slog.Logger
	// Registry, when set, receives the ledger's metrics.
	Registry *prometheus.Registry
	// Retention is how long after NotAfter an entry's full content is
	// kept before Prune may remove it (0 -> 30 days).
	Retention time.Duration
	// DiskReserve is the free space (bytes) the ledger leaves on its
	// filesystem: below it Append fails with ErrDiskReserve (0: no reserve).
	DiskReserve uint64
	// FreeSpace returns the bytes available on the ledger's filesystem
	// (nil: statfs of the ledger file's directory). For tests.
	FreeSpace func() (uint64, error)
	// OnRevoke, when set, is called with the node and SPIFFE ID of each
	// revoked certificate once its revocation is durable, before agents
	// are told (the CA refills the identity's issuance quota with it).
	OnRevoke func(node, spiffeID string)
	// ReadOnly opens the file read-only for forensics, even if it is
	// damaged: a damaged file is not read by bbolt but salvaged (every
	// entry on a sound page is copied into a temporary file, removed by
	// Close; the damage is logged) and the copy is served. Entries on
	// damaged pages read as missing; Append, Revoke and Prune fail with
	// ErrReadOnly; the tree is not checked at open (ledger verify does).
	ReadOnly bool
}

// Ledger is an open issuance log.
type Ledger struct {
	db        *bolt.DB
	clock     func() time.Time
	origin    string
	signer    note.Signer
	verifier  note.Verifier
	vkey      string
	log       *slog.Logger
	retention time.Duration
	metrics   *metrics
	readOnly  bool
	onRevoke  func(node, spiffeID string)
	reserve   *reserve
	cleanup   func()     // removes a salvaged copy (forensic mode)
	commit    *committer // writes Appends (commit.go); nil when read-only

	revokeMu sync.Mutex // serializes Revoke

	mu        sync.Mutex
	head      treeState              // latest committed tree
	revoked   map[string]revokedCert // serial -> revocation, unexpired only
	revCh     chan struct{}          // closed when revoked changes
	bans      map[string]Ban         // node -> ban in force (agents.go)
	banCh     chan struct{}          // closed when bans changes; nil until asked for
	appendCh  chan struct{}          // closed when the log grows
	lastCP    []byte                 // latest signed checkpoint
	lastCPLen uint64                 // its tree size
	closed    bool
	indexed   uint64        // entries [0, indexed) are in the secondary indexes
	indexedCh chan struct{} // closed when indexed advances

	kick    chan struct{} // wakes the indexer after indexDelay
	urgent  chan struct{} // wakes the indexer now
	stop    chan struct{} // closed by Close
	stopped chan struct{} // closed when the indexer exits
}

// Bucket names.
var (
	bMeta    = []byte("meta")
	bEntries = []byte("entries")
	bNodes   = []byte("nodes")
	bSerial  = []byte("by_serial")
	bSPIFFE  = []byte("by_spiffe_id")
	bNode    = []byte("by_node")
	bExpiry  = []byte("by_expiry")
	bRevoked = []byte("revoked")

	kTree       = []byte("tree")
	kCheckpoint = []byte("checkpoint")
	kOrigin     = []byte("origin")
	kIndexed    = []byte("indexed")
)

// Open opens (creating if needed) the ledger at path, a bbolt file with
// mode 0600. It checks the file's integrity before using it: every page's
// structure (a damaged page is ErrDamaged naming the file and the page,
// never a bbolt panic), bbolt's own consistency check, and the Merkle tree
// recomputed from the stored entries against the stored tree head and
// signed checkpoint; and that the file belongs to the same origin. With
// Options.ReadOnly only the meta pages must be sound.
func Open(path string, opts Options) (*Ledger, error) {
	l := &Ledger{
		clock: opts.Clock, origin: opts.Origin, log: opts.Logger,
		retention: opts.Retention, revCh: make(chan struct{}), appendCh: make(chan struct{}),
		indexedCh: make(chan struct{}), kick: make(chan struct{}, 1), urgent: make(chan struct{}, 1),
		stop: make(chan struct{}), stopped: make(chan struct{}), readOnly: opts.ReadOnly,
		onRevoke: opts.OnRevoke,
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	if l.origin == "" {
		l.origin = DefaultOrigin
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.retention == 0 {
		l.retention = DefaultRetention
	}
	if err := l.loadKey(path, opts); err != nil {
		return nil, err
	}
	if err := l.openDB(path, opts); err != nil {
		return nil, err
	}
	if !l.readOnly {
		l.reserve = newReserve(path, opts, l.clock, l.log)
	}
	l.metrics = newMetrics(opts.Registry, l)
	if l.readOnly {
		close(l.stopped) // no indexer: the file is not written
	} else {
		l.commit = newCommitter(l.db, l.publish)
		go l.commit.run()
		go l.runIndexer()
	}
	return l, nil
}

// openDB opens and checks the file, loads its state and, unless read-only,
// brings the indexes up to date.
func (l *Ledger) openDB(path string, opts Options) error {
	var err error
	if l.readOnly {
		l.db, l.cleanup, err = openForensic(path, l.log)
	} else {
		l.db, err = openChecked(path)
	}
	if err != nil {
		return err
	}
	if !l.readOnly {
		err = l.checkExisting(path) // before init writes to the file
	}
	if err == nil {
		err = l.init()
	}
	if err == nil {
		err = l.catchUp()
	}
	if err != nil {
		l.db.Close()
		if l.cleanup != nil {
			l.cleanup()
		}
		return err
	}
	return nil
}

// loadKey sets the checkpoint signer from opts or from the key file.
func (l *Ledger) loadKey(path string, opts Options) error {
	if (opts.Signer == nil) != (opts.VerifierKey == "") {
		return errors.New("ledger: Options.Signer and Options.VerifierKey must be set together")
	}
	if opts.Signer != nil {
		l.signer, l.vkey = opts.Signer, opts.VerifierKey
	} else {
		if err := checkKeyPresent(path); err != nil {
			return err
		}
		skey, err := loadOrCreateKey(path+".key", l.origin)
		if err != nil {
			return err
		}
		if l.signer, err = note.NewSigner(skey); err != nil {
			return fmt.Errorf("ledger: log key %s.key: %w", path, err)
		}
		if l.vkey, err = verifierKeyOf(skey); err != nil {
			return err
		}
	}
	v, err := note.NewVerifier(l.vkey)
	if err != nil {
		return fmt.Errorf("ledger: verifier key: %w", err)
	}
	if v.Name() != l.signer.Name() || v.KeyHash() != l.signer.KeyHash() {
		return errors.New("ledger: Options.VerifierKey does not match Options.Signer")
	}
	l.verifier = v
	return nil
}

// checkKeyPresent refuses to generate a new log key for an existing
// ledger: every checkpoint saved by auditors would stop verifying.
func checkKeyPresent(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return nil
	}
	if _, err := os.Stat(path + ".key"); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ledger: log key %s.key is missing but the ledger %s exists; restore the key from a backup (a new key would make every saved checkpoint unverifiable)", path, path)
	}
	return nil
}

func loadOrCreateKey(file, name string) (string, error) {
	b, err := os.ReadFile(file)
	if err == nil {
		return string(b), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("ledger: read log key: %w", err)
	}
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", fmt.Errorf("ledger: generate log key: %w", err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("ledger: write log key: %w", err)
	}
	if _, err := f.WriteString(skey); err != nil {
		f.Close()
		return "", fmt.Errorf("ledger: write log key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("ledger: write log key: %w", err)
	}
	return skey, f.Close()
}

// init creates the buckets and loads the tree head and revocations.
func (l *Ledger) init() error {
	if l.readOnly {
		return l.view(l.load)
	}
	return l.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bMeta, bEntries, bNodes, bSerial, bSPIFFE, bNode, bExpiry, bRevoked} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("ledger: create bucket %s: %w", name, err)
			}
		}
		if o := tx.Bucket(bMeta).Get(kOrigin); o == nil {
			if err := tx.Bucket(bMeta).Put(kOrigin, []byte(l.origin)); err != nil {
				return fmt.Errorf("ledger: %w", err)
			}
		}
		return l.load(tx)
	})
}

// load checks the file's origin and loads the tree head, the latest
// checkpoint and the index position.
func (l *Ledger) load(tx *bolt.Tx) error {
	meta := tx.Bucket(bMeta)
	if meta == nil || tx.Bucket(bEntries) == nil || tx.Bucket(bNodes) == nil {
		return errors.New("ledger: the file is not a ledger (its buckets are missing)")
	}
	if o := meta.Get(kOrigin); string(o) != l.origin {
		return fmt.Errorf("ledger: file belongs to log %q, not %q", o, l.origin)
	}
	st, err := readTree(tx)
	if err != nil {
		return err
	}
	l.head = st
	if cp := meta.Get(kCheckpoint); cp != nil {
		l.lastCP = append([]byte(nil), cp...)
		l.lastCPLen = checkpointSize(cp)
	}
	l.indexed = indexedOf(tx)
	return nil
}

// Origin returns the log's origin line.
func (l *Ledger) Origin() string { return l.origin }

// VerifierKey returns the note verifier key for the log's checkpoints.
func (l *Ledger) VerifierKey() string { return l.vkey }

// Size returns the number of entries in the log.
func (l *Ledger) Size() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head.size
}

// Close closes the database. Appends already queued are committed first;
// later ones fail with ErrClosed.
func (l *Ledger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if l.commit != nil {
		l.commit.close()
	}
	close(l.stop)
	<-l.stopped
	l.mu.Lock()
	close(l.indexedCh) // wakes waitIndexed and Watch, which then see closed
	l.indexedCh = make(chan struct{})
	close(l.appendCh)
	l.appendCh = make(chan struct{})
	l.mu.Unlock()
	err := l.db.Close()
	if l.cleanup != nil {
		l.cleanup()
	}
	if err != nil {
		return fmt.Errorf("ledger: close: %w", err)
	}
	return nil
}
