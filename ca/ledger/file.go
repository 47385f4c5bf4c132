package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// bbolt's meta page layout (little-endian on the platforms we run on): a
// 16-byte page header, then magic, version, page size, flags, root bucket
// (16 bytes), freelist page, high-water page id, txid, checksum.
const (
	boltMagic       = 0xED0CDAED
	metaMagicOff    = 16
	metaPageSizeOff = 24
	metaPgidOff     = 56
	metaTxidOff     = 64
	metaSize        = 80
)

// checkNotTruncated refuses a bbolt file shorter than its own meta pages
// say it is. bbolt maps the file into memory and would crash reading past
// the end of a truncated file; this check turns that into an error.
func checkNotTruncated(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ledger: open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("ledger: stat %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return nil // new file
	}
	first := make([]byte, metaSize)
	if _, err := io.ReadFull(f, first); err != nil {
		return fmt.Errorf("ledger: %s is truncated or not a ledger file (%d bytes)", path, fi.Size())
	}
	if binary.LittleEndian.Uint32(first[metaMagicOff:]) != boltMagic {
		return fmt.Errorf("ledger: %s is not a ledger (bbolt) file", path)
	}
	pageSize := int64(binary.LittleEndian.Uint32(first[metaPageSizeOff:]))
	need := int64(0)
	var bestTx uint64
	for _, off := range []int64{0, pageSize} {
		m := make([]byte, metaSize)
		if _, err := f.ReadAt(m, off); err != nil {
			return fmt.Errorf("ledger: %s is truncated: %d bytes, shorter than its meta pages", path, fi.Size())
		}
		if binary.LittleEndian.Uint32(m[metaMagicOff:]) != boltMagic {
			continue
		}
		if tx := binary.LittleEndian.Uint64(m[metaTxidOff:]); tx >= bestTx {
			bestTx, need = tx, int64(binary.LittleEndian.Uint64(m[metaPgidOff:]))*pageSize
		}
	}
	if fi.Size() < need {
		return fmt.Errorf("ledger: %s is truncated: %d bytes, but its database needs %d; restore it from a backup", path, fi.Size(), need)
	}
	return nil
}
