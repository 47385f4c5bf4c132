// Package witness verifies witnessed checkpoints of Castellan's issuance
// log: it parses witness keys (C2SP tlog-cosignature/v1 verifier keys) and
// witness policies (which witnesses, how many of them), and checks that a
// checkpoint is signed by the log and cosigned by a quorum of a policy's
// witnesses (Policy.Verify).
//
// It is the verification half of ca/witness, kept apart so that the node
// agent, which must never import the CA's packages, checks checkpoints
// with the same code the CA uses to collect them. The flag and YAML forms
// of a policy are described in ca/witness.
package witness
