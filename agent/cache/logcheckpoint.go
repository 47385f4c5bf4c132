package cache

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyLogCheckpoint is the meta key of the last issuance-log checkpoint the
// agent accepted (agent/logcheck).
var keyLogCheckpoint = []byte("log_checkpoint")

// LogCheckpoint returns the last accepted issuance-log checkpoint (a
// cosigned note), nil if none was stored. The caller verifies it again:
// the file is the agent's own, but a damaged value must not be trusted.
func (c *Cache) LogCheckpoint() ([]byte, error) {
	var out []byte
	err := c.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyLogCheckpoint); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache: read the log checkpoint: %w", err)
	}
	return out, nil
}

// PutLogCheckpoint durably stores cp as the last accepted issuance-log
// checkpoint, replacing the previous one. The caller has checked that cp
// is consistent with the one it replaces.
func (c *Cache) PutLogCheckpoint(cp []byte) error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyLogCheckpoint, append([]byte(nil), cp...))
	})
	if err != nil {
		return fmt.Errorf("cache: store the log checkpoint: %w", err)
	}
	return nil
}
