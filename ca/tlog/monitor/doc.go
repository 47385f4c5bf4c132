// Package monitor follows Castellan's issuance log over HTTP the way a
// Certificate Transparency monitor follows a CT log: from a saved
// checkpoint, it verifies every new checkpoint and every new entry, and
// reports the entries that match a filter (a SPIFFE ID prefix, a node).
//
// It reads the log as any C2SP tlog-tiles client would (ca/tlog serves it
// under /log/ on every CA replica), and trusts nothing the server says
// that it has not checked:
//
//   - the checkpoint must be signed by the pinned log key (and, with a
//     witness policy, cosigned by a quorum of its witnesses);
//   - the new tree must extend the saved one: a smaller tree is a
//     rollback, the same size with another root or a tree whose first
//     entries hash to another root is a fork (ErrFork);
//   - every new entry is downloaded from the entry bundles, hashed, and
//     folded into the tree together with the saved tree's own nodes
//     (read from the hash tiles): the result must be the signed root, and
//     every hash tile the new entries cover must hold exactly the hashes
//     they produce (ErrInvalid otherwise);
//   - every new entry must decode under the documented entry format,
//     version 1 (package logentry), at its own index, and an issuance or renewal entry must
//     describe the certificate it carries: its only URI SAN, serial,
//     validity and key hash (ErrInvalid otherwise). Filters therefore
//     match what certificates say, not only what the log claims.
//
// Every response is capped in size and time (Limits; ErrLimit). The state,
// the last verified checkpoint, is kept in a file written atomically
// (package state; state.ErrDamaged) and advanced only after a step
// verified and its matches were reported, so a rerun continues where the
// last one stopped and a refused step leaves it as it was.
//
// Entries whose content the CA has pruned (their certificate expired
// longer ago than its retention period; the server answers 410 Gone for
// their bundle) are still proven through their leaf hashes in the hash
// tiles, but cannot be matched: Result.Pruned counts them. A 410 is
// believed only where pruning is possible: never after an entry (read in
// this step or, through the state, an earlier one) logged less than the
// retention period ago, since the entries after it are younger still.
//
// The package imports neither the ledger's storage nor any Kubernetes
// client: it needs the log's public data alone.
package monitor
