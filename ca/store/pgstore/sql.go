package pgstore

// The statements of keyspaces and of a transaction's begin and commit
// (package pgtx has those of its reads and writes).
const (
	sqlCreateKeyspace = `INSERT INTO castellan_keyspaces (name, version) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING`
	sqlVersion        = `SELECT version FROM castellan_keyspaces WHERE name = $1`
	sqlVersions       = `SELECT name, version FROM castellan_keyspaces WHERE name = ANY($1)`

	sqlBeginView   = `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`
	sqlBeginUpdate = `BEGIN ISOLATION LEVEL READ COMMITTED`
	sqlLock        = `SELECT version FROM castellan_keyspaces WHERE name = $1 FOR UPDATE`

	sqlBump   = `UPDATE castellan_keyspaces SET version = $2 WHERE name = $1`
	sqlNotify = `SELECT pg_notify('castellan_store', $1)`

	// channel is the LISTEN/NOTIFY channel; payloads are "keyspace:version".
	channel      = "castellan_store"
	listenerName = "castellan-listener"
)
