// Package leaf owns the X.509-SVID leaf as Castellan's CA writes it: the
// checks a certificate signing request must pass (ParseWorkloadCSR,
// ParseAgentCSR, CheckPublicKey, CheckID) and the refusal reasons they
// carry; the cfssl signing policy and the template of a leaf (NewPolicy,
// Template); the hand-written DER encoder (Create, with the TBSCertificate
// laid out by internal/tbs and written by internal/der into one buffer),
// proven byte for byte equal to x509.CreateCertificate by FuzzLeafTBS and
// its checked-in seed corpus; and the parse-back of what it encoded
// (Certificate).
//
// It holds no key: Create signs with the key it is given. The CA that owns
// the keys is ca/authority.
package leaf
