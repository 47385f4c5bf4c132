// Package datastorecmd holds castellanctl's datastore command group:
// datastore migrate, which copies a stopped bbolt CA into an empty
// PostgreSQL database and checks the copied ledger.
package datastorecmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/store"
	"github.com/castellan-dev/castellan/ca/store/boltstore"
	"github.com/castellan-dev/castellan/ca/store/pgstore"
	"github.com/castellan-dev/castellan/cmd/castellanctl/internal/cli"
)

// The CA's bbolt files in its data directory and the PostgreSQL keyspace
// each one becomes (cmd/castellan-server opens the same names).
// authority.db (the CA's authority journal) is absent from a data directory
// last served by a server without journal: the next server imports the CA
// files of its data directory instead.
var migratedFiles = []struct {
	file, keyspace string
	optional       bool
}{
	{"registry.db", "registry", false},
	{"authority.db", "authority", true},
	{"ledger.db", "ledger", false},
}

// Run runs `castellanctl datastore migrate`.
func Run(ctx context.Context, g *cli.Globals, args []string) error {
	sub, args, err := cli.Subcommand("datastore", args, "migrate")
	if err != nil {
		return err
	}
	switch sub {
	case "migrate":
		return datastoreMigrate(ctx, g, args)
	}
	return nil
}

// datastoreMigrate copies a stopped bbolt CA's registry and ledger into an
// empty PostgreSQL database, byte for byte, and checks that the copied
// ledger has the same size and tree as the file.
func datastoreMigrate(ctx context.Context, g *cli.Globals, args []string) error {
	fs := g.NewFlags("datastore migrate")
	dataDir := fs.String("data-dir", "", "data directory of the stopped bbolt castellan-server (holds registry and ledger.db)")
	to := fs.String("to", "", "PostgreSQL DSN to copy into (postgres://...); prefer --to-file")
	toFile := fs.String("to-file", "", "file holding the PostgreSQL DSN")
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *dataDir == "" || (*to == "") == (*toFile == "") {
		return cli.Usagef("datastore migrate: need --data-dir and one of --to or --to-file")
	}
	dsn, err := readDSN(*to, *toFile)
	if err != nil {
		return err
	}
	conn, err := pgstore.Connect(ctx, dsn, pgstore.Options{})
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, f := range migratedFiles {
		if _, err := os.Stat(filepath.Join(*dataDir, f.file)); f.optional && errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(g.Stdout, "no %s: nothing to copy into keyspace %q\n", f.file, f.keyspace)
			continue
		}
		n, err := migrateFile(ctx, conn, filepath.Join(*dataDir, f.file), f.keyspace)
		if err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "copied %s: %d keys into keyspace %q\n", f.file, n, f.keyspace)
		if f.keyspace == "authority" {
			fmt.Fprintf(g.Stdout, "the authorities' keys are sealed under %s: give every replica that file with castellan-server --kek-file\n",
				filepath.Join(*dataDir, "authority.kek"))
		}
	}
	return checkMigratedLedger(ctx, g, conn, filepath.Join(*dataDir, "ledger.db"))
}

// readDSN returns the DSN given on the command line or in a file.
func readDSN(dsn, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("datastore migrate: %w", err)
		}
		dsn = strings.TrimSpace(string(b))
	}
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return "", cli.Usagef("datastore migrate: the destination must be a postgres:// DSN")
	}
	return dsn, nil
}

// migrateFile copies every bucket of one bbolt file into a keyspace,
// "meta" (which marks a ledger as initialized) last.
func migrateFile(ctx context.Context, conn *pgstore.Conn, path, keyspace string) (int, error) {
	src, err := boltstore.Open(path)
	if err != nil {
		return 0, fmt.Errorf("datastore migrate: open %s (stop castellan-server first): %w", path, err)
	}
	defer src.Close()
	names, err := src.Buckets()
	if err != nil {
		return 0, fmt.Errorf("datastore migrate: %s: %w", path, err)
	}
	var meta [][]byte
	var ordered [][]byte
	for _, n := range names {
		if bytes.Equal(n, []byte("meta")) {
			meta = append(meta, n)
		} else {
			ordered = append(ordered, n)
		}
	}
	dst, err := conn.Keyspace(ctx, keyspace)
	if err != nil {
		return 0, err
	}
	n, err := store.Copy(ctx, dst, src, append(ordered, meta...))
	if err != nil {
		return n, fmt.Errorf("datastore migrate: %s into %q: %w (drop the database and start again)", path, keyspace, err)
	}
	return n, nil
}

// checkMigratedLedger opens the copied ledger and the file with the file's
// log key and compares their sizes and tree heads.
func checkMigratedLedger(ctx context.Context, g *cli.Globals, conn *pgstore.Conn, path string) error {
	opts := ledger.Config{KeyFile: path + ".key"}
	src, err := ledger.Open(path, opts)
	if err != nil {
		return fmt.Errorf("datastore migrate: reopen %s: %w", path, err)
	}
	defer src.Close()
	db, err := conn.Keyspace(ctx, "ledger")
	if err != nil {
		return err
	}
	dst, err := ledger.New(db, opts)
	if err != nil {
		return fmt.Errorf("datastore migrate: the copied ledger does not open: %w", err)
	}
	defer dst.Close()
	if src.Size() != dst.Size() || !bytes.Equal(src.StoredCheckpoint(), dst.StoredCheckpoint()) {
		return errors.New("datastore migrate: the copied ledger differs from the file; drop the database and start again")
	}
	_, err = fmt.Fprintf(g.Stdout, "ledger: %d entries, same tree and checkpoint as %s\n"+
		"give every replica the log key %s.key (e.g. as Secret castellan-ledger-key) with --ledger-key-file\n",
		dst.Size(), path, path)
	return err
}
