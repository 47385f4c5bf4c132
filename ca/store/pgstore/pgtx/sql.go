package pgtx

// The statements of a transaction's reads and writes.
const (
	sqlBucketExists = `SELECT EXISTS (SELECT 1 FROM castellan_buckets WHERE keyspace = $1 AND name = $2)`
	sqlGet          = `SELECT value FROM castellan_kv WHERE keyspace = $1 AND bucket = $2 AND key = $3`
	sqlPageFrom     = `SELECT key, value FROM castellan_kv WHERE keyspace = $1 AND bucket = $2 AND key >= $3 ORDER BY key LIMIT $4`
	sqlPageAfter    = `SELECT key, value FROM castellan_kv WHERE keyspace = $1 AND bucket = $2 AND key > $3 ORDER BY key LIMIT $4`

	sqlCreateBuckets = `INSERT INTO castellan_buckets (keyspace, name) SELECT $1, unnest($2::bytea[]) ON CONFLICT DO NOTHING`
	sqlPut           = `INSERT INTO castellan_kv (keyspace, bucket, key, value)
SELECT $1, b, k, v FROM unnest($2::bytea[], $3::bytea[], $4::bytea[]) AS t (b, k, v)
ON CONFLICT (keyspace, bucket, key) DO UPDATE SET value = excluded.value`
	sqlDelete = `DELETE FROM castellan_kv d USING unnest($2::bytea[], $3::bytea[]) AS t (b, k)
WHERE d.keyspace = $1 AND d.bucket = t.b AND d.key = t.k`
)
