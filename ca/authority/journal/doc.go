// Package journal defines the authority journal: the record of every X.509
// authority a trust domain has had, kept in a keyspace of the CA's store
// (ca/store), its states (prepared, active, old, tainted, revoked) and the
// transitions between them (Txn, Transition, TransitionError), when each
// root entered the trust bundle, the rotation schedule that decides what
// is due (Schedule), and the authority metrics. It decides and records;
// ca/authority/rotation acts on it.
package journal
