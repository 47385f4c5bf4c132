// Package index is the ledger's certificate index: the secondary indexes
// by serial, SPIFFE ID, node and expiry, the revocations, lineage parents
// and agent records derived from the log, written by the indexer (Run,
// CatchUp) or, on a shared store, in the transaction of each append
// (WriteTx), and the queries that read them (Entry, Get, List), which wait
// until every entry appended before them is indexed.
package index
