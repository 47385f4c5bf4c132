// Package witness has Castellan's issuance log witnessed: it submits the
// log's checkpoints to independent witnesses over C2SP tlog-witness,
// collects their C2SP tlog-cosignature/v1 cosignatures, and checks that a
// cosigned checkpoint satisfies a witness policy.
//
// A witness keeps, for each log it follows (named by the checkpoint's
// origin line and trusted through the log's note verifier key), the
// latest checkpoint it cosigned. It cosigns a new checkpoint only with a
// consistency proof from that one, so no two cosigned checkpoints of one
// log can disagree: a CA that shows one log to its agents and another to
// auditors, or that rewrites its log, cannot get both cosigned by the same
// witness. A policy (which witnesses, and how many of them must cosign)
// turns that into something agents and auditors check.
//
// # Policy
//
// A Policy is a list of witnesses (a local name, the submission URL
// prefix, the witness's Ed25519 cosignature/v1 verifier key) and a
// quorum. Its flag form is one NAME=URL+VKEY per witness plus a quorum
// (ParsePolicy); its YAML form is
//
//	quorum: 2
//	witnesses:
//	  - name: w1
//	    url: https://witness1.example/
//	    key: witness1.example/w1+1a2b3c4d+BASE64KEY
//
// (ParsePolicyYAML). Policy.Verify checks a checkpoint: the log's
// signature, and at least the quorum of distinct witnesses' cosignatures.
//
// # Submitting
//
// Client.Submit POSTs URL/add-checkpoint to every witness at once with
// "old N", the consistency proof from N, a blank line and the checkpoint,
// where N is the size the witness last cosigned as far as the Client
// knows. A 409 answer carries the witness's size: the Client retries once
// with the proof from there. A 200 answer must be signature lines; the
// line by the witness's key must verify over exactly the submitted
// checkpoint with a timestamp near the Client's clock, or the answer is
// discarded. Other answers map to errors (ErrInconsistent for 422, which a
// fork causes; ErrUnknownLog for 404; ErrForbidden for 403; ...) that a
// *QuorumError collects when too few witnesses cosigned.
//
// # Cosignature format
//
// A cosignature/v1 line is "— <key name> base64(key ID || timestamp ||
// signature)": a 4-byte key ID, SHA-256(name || "\n" || 0x04 || public
// key)[:4]; an 8-byte big-endian POSIX timestamp; and an Ed25519
// signature of "cosignature/v1\ntime <timestamp>\n" followed by the
// checkpoint's text. ML-DSA-44 cosignatures are not supported yet.
package witness
