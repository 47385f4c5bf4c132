// Package logcheck makes the node agent check, before it serves a
// certificate, that the certificate is in the CA's witnessed issuance log.
//
// The CA logs every issuance in a Merkle tree whose checkpoints it submits
// to independent witnesses (ca/witness). A Checker asks the CA
// (GetLogProof) for the latest checkpoint cosigned under the agent's own
// witness policy, a consistency proof from the last checkpoint the agent
// accepted, and, for each new certificate, its log entry and an inclusion
// proof. It accepts the checkpoint only if the log key pinned in the
// agent's configuration signed it, a quorum of the policy's witnesses
// cosigned it, and it extends the accepted one; it then stores it in the
// agent's cache before using it, so a restarted agent cannot be rolled
// back to an older or other view of the log. A certificate is proven when
// its entry (tlog entry format version 1, an issuance or renewal whose
// "cert" is the certificate's DER and whose "index" is its position) is
// included in the accepted checkpoint's tree.
//
// A checkpoint that does not extend the accepted one (a smaller tree, the
// same size with another root, or a consistency proof that fails) means
// the log forked or was rewritten: the Checker logs it at Error level,
// counts it, and refuses every later proof until the agent restarts.
//
// Modes: under Enforce the manager serves a new certificate only once it
// is proven (the old one keeps serving meanwhile); under Monitor it serves
// at once and the Checker proves it in the background, alarming (a log
// line at Error level and castellan_agent_log_unverified_total) when it
// cannot; Off checks nothing.
package logcheck
