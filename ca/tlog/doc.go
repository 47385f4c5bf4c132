// Package tlog serves Castellan's issuance ledger (package ledger) over HTTP
// in the C2SP formats, so that any tlog-tiles client can fetch it, build
// inclusion and consistency proofs and verify them without Castellan code.
// castellan-server mounts it under /log/ on its --http-listen port.
//
// # Resources
//
//   - /log/checkpoint: the latest checkpoint, a C2SP tlog-checkpoint signed
//     note: the origin line, the tree size in decimal, the base64 RFC 6962
//     root hash, a blank line and the log's Ed25519 note signature, whose
//     key name is the origin. Verify it with the log's note verifier key
//     (castellanctl ledger checkpoint -o json prints it as verifier_key; pin
//     it, do not fetch it from the log you are checking). Cache-Control:
//     no-cache. A request signs a new checkpoint of a grown log at most once
//     a second; in between it serves the latest one, which may lag the log
//     by up to that second.
//   - /log/tile/<L>/<N>[.p/<W>]: C2SP tlog-tiles hash tiles, height 8: tile
//     (L, N) holds the RFC 6962 hashes of the tree nodes at level 8*L with
//     indices N*256 to N*256+255 (the first W of them for a partial tile),
//     32 bytes each, concatenated. N is written in 3-digit groups, all but
//     the last prefixed with "x" (1234067 is x001/x234/067). Full tiles are
//     immutable (Cache-Control: immutable, one year); partial tiles are
//     cached for a minute.
//   - /log/tile/entries/<N>[.p/<W>]: entry bundles: entries N*256 to
//     N*256+W-1, each as a 2-byte big-endian length followed by the entry's
//     leaf data (below). The RFC 6962 leaf hash of that data,
//     SHA-256(0x00 || data), is the level-0 hash in tile 0/N.
//
// A tile or bundle not yet complete in the current tree is 404, as is any
// path beyond it; a malformed tile path is 400 with a plain-text reason.
// Each request reads at most one tile or bundle, and a bounded number are
// served at once.
//
// # Pruned entries
//
// The ledger may prune the full content of entries whose certificate
// expired longer ago than its retention period (30 days by default); their
// leaf hashes stay in the tree. Hash tiles therefore always work, and every
// inclusion and consistency proof still verifies, but an entry bundle that
// contains a pruned entry cannot be served: it is 410 Gone, with a message
// naming the first pruned entry. Clients that mirror the log should fetch
// bundles before the retention period ends.
//
// # Entry format, version 1
//
// An entry's leaf data is one JSON object (UTF-8, no trailing newline) with
// the members below, in this order, members marked optional left out when
// empty. The data is hashed exactly as served: never re-encode it before
// hashing. A decoder must check "v" and refuse versions it does not know; a
// new version will change "v", never the meaning of a member.
//
//	v                  number  format version: 1
//	index              number  the entry's position in the log, from 0; an
//	                           entry cannot be moved without changing its hash
//	kind               string  "issuance", "renewal", "revocation",
//	                           "ca_key_change" or "join_token_use"
//	time               string  when the event happened, RFC 3339 with
//	                           fractional seconds, UTC
//	serial             string  optional; certificate serial number, lower-case
//	                           hex without leading zeros
//	spiffe_id          string  optional; the certificate's SPIFFE ID
//	node               string  optional; the node (agent) concerned
//	not_before         string  optional; certificate validity start (RFC 3339)
//	not_after          string  optional; certificate validity end (RFC 3339)
//	public_key_sha256  string  optional; hex SHA-256 of the certificate's
//	                           SubjectPublicKeyInfo
//	cert               string  optional; the leaf certificate, DER in
//	                           standard base64 (issuance and renewal)
//	reason             string  optional; revocation reason or other detail
//
// Issuance and renewal entries carry serial, spiffe_id, node, the validity
// window, public_key_sha256 and cert; a revocation carries serial, reason
// and, copied from the issuance, spiffe_id, node and not_after. To check
// that a certificate is logged, find the entry whose cert decodes to its
// DER (or whose serial matches), hash the entry data as above and prove its
// inclusion at its index in a verified checkpoint.
package tlog
