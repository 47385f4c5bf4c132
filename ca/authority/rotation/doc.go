// Package rotation runs an Authority's journal (ca/authority/journal):
// it opens the CA from the journal (bootstrapping it from the data dir or
// the plug-in files), follows other replicas' changes, installs the active
// authority into the CA in force, makes the transitions an operator asks
// for (Prepare, Activate, Taint, Revoke) and the ones the schedule has due
// (Tick), and picks up new plug-in CA files. ca/authority embeds its
// Journal, so these are methods of the Authority.
//
// The private keys it opens stay in keystore.CA values: no method here
// returns one.
package rotation
