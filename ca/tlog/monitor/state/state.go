// Package state keeps a log monitor's position in the log: the last
// checkpoint it verified, in a file that is read only if it holds a
// checkpoint signed by the pinned log key, and written atomically, so a
// crash leaves the old position or the new one, never a mix.
package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// stateVersion is the version of the state file format.
const stateVersion = 1

// maxStateFile bounds the state file read.
const maxStateFile = 1 << 20

// ErrDamaged: the state file is damaged or belongs to another log.
var ErrDamaged = errors.New("monitor: damaged state file")

// State is the monitor's position in the log: the last checkpoint it
// verified, with the signed note it came as. The zero State (nil) is the
// empty tree, before any entry.
type State struct {
	// Checkpoint is the verified checkpoint.
	Checkpoint log.Checkpoint
	// Signed is the signed note, as the server served it.
	Signed []byte
	// Newest is the time of the newest entry read so far (zero: none). No
	// entry after it can have been pruned before the CA's retention
	// period has passed since then.
	Newest time.Time
}

// stateFile is the JSON form of a State on disk.
type stateFile struct {
	Version    int       `json:"version"`
	Checkpoint string    `json:"checkpoint"`
	Newest     time.Time `json:"newest_entry_time,omitzero"`
}

// Load reads the state file at path. It returns nil, nil when the
// file does not exist (a first run starts from the empty tree). The file
// must be the JSON Save writes, holding a checkpoint of origin ("":
// the key's name) signed by logKey; anything else is ErrDamaged, so a
// damaged or substituted file is never taken for a position in the log.
func Load(path string, logKey note.Verifier, origin string) (*State, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("monitor: state file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("monitor: state file: %w", err)
	}
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrDamaged, path, maxStateFile)
	}
	var sf stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return nil, fmt.Errorf("%w: %s is not a monitor state file (%v); restore it from a backup, or delete it to start over from the empty tree", ErrDamaged, path, err)
	}
	if sf.Version != stateVersion {
		return nil, fmt.Errorf("%w: %s has version %d; this monitor reads version %d", ErrDamaged, path, sf.Version, stateVersion)
	}
	if origin == "" {
		origin = logKey.Name()
	}
	cp, _, _, err := log.ParseCheckpoint([]byte(sf.Checkpoint), origin, logKey)
	if err != nil {
		return nil, fmt.Errorf("%w: the checkpoint in %s does not verify with the log key %s for origin %q (%v): the file was altered or belongs to another log", ErrDamaged, path, logKey.Name(), origin, err)
	}
	return &State{Checkpoint: *cp, Signed: []byte(sf.Checkpoint), Newest: sf.Newest}, nil
}

// Save writes st to path atomically: a temporary file in the same
// directory, written, synced, renamed over path, and the directory
// synced, so a crash leaves the old state or the new one, never a mix.
func Save(path string, st *State) error {
	b, err := json.Marshal(stateFile{Version: stateVersion, Checkpoint: string(st.Signed), Newest: st.Newest.UTC()})
	if err != nil {
		return fmt.Errorf("monitor: state: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("monitor: saving state: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("monitor: saving state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("monitor: saving state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("monitor: saving state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("monitor: saving state: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("monitor: saving state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("monitor: saving state: sync %s: %w", dir, err)
	}
	return nil
}
