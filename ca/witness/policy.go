package witness

import (
	iwitness "github.com/castellan-dev/castellan/internal/witness"
)

// The verification half of this package lives in internal/witness, which
// the node agent imports too (agent/ never imports ca/). These aliases keep
// this package's API whole for the CA and castellanctl.
type (
	// Key is a witness's cosignature/v1 verifier key (see ParseKey).
	Key = iwitness.Key
	// Witness is one witness of a policy.
	Witness = iwitness.Witness
	// Policy is a witness policy: which witnesses, and how many must cosign.
	Policy = iwitness.Policy
	// Cosignature is a verified witness cosignature.
	Cosignature = iwitness.Cosignature
	// Verified is a checkpoint signed by its log and cosigned by a quorum.
	Verified = iwitness.Verified
)

// ClockSkew is how far in the future a cosignature's timestamp may be.
const ClockSkew = iwitness.ClockSkew

// ParseKey parses a witness's verifier key in C2SP vkey form.
func ParseKey(vkey string) (*Key, error) { return iwitness.ParseKey(vkey) }

// NewPolicy returns the policy "quorum of ws".
func NewPolicy(quorum int, ws ...Witness) (*Policy, error) { return iwitness.NewPolicy(quorum, ws...) }

// ParseWitness parses the flag form of a witness, NAME=URL+VKEY.
func ParseWitness(s string) (Witness, error) { return iwitness.ParseWitness(s) }

// ParsePolicy builds a policy from repeated NAME=URL+VKEY flags and a
// quorum; quorum 0 means all of them.
func ParsePolicy(quorum int, witnesses []string) (*Policy, error) {
	return iwitness.ParsePolicy(quorum, witnesses)
}

// ParsePolicyYAML parses the YAML form of a policy.
func ParsePolicyYAML(b []byte) (*Policy, error) { return iwitness.ParsePolicyYAML(b) }

// PolicyFromFlags builds the policy of the command-line flags (see
// internal/witness.PolicyFromFlags).
func PolicyFromFlags(file string, witnesses []string, quorum int) (*Policy, error) {
	return iwitness.PolicyFromFlags(file, witnesses, quorum)
}
