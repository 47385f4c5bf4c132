// Package csrparse reads the PKCS#10 requests the CA signs. Parse reads
// without reflection (ParseFast) the one shape of request that almost every
// caller sends: the agent's (agent/client.NewCSR), and
// what x509.CreateCertificateRequest, Istio and SPIRE agents produce for an
// ECDSA key:
//
//	CertificationRequest ::= SEQUENCE {
//	    certificationRequestInfo  SEQUENCE {
//	        version        INTEGER 0,
//	        subject        SEQUENCE OF SET { SEQUENCE { 2.5.4.n,
//	                           PrintableString or UTF8String } },
//	        subjectPKInfo  SEQUENCE { SEQUENCE { id-ecPublicKey,
//	                           prime256v1 or secp384r1 }, BIT STRING point },
//	        attributes [0] empty, or one extensionRequest attribute holding
//	                       one value: zero extensions, or one subjectAltName
//	                       (critical TRUE or absent) whose names are URIs,
//	                       DNS names, e-mail addresses and IP addresses },
//	    signatureAlgorithm SEQUENCE { ecdsa-with-SHA256 or -SHA384 },
//	    signature          BIT STRING }
//
// DER throughout (cryptobyte refuses indefinite and non-minimal lengths and
// high tag numbers), nothing after any element, no unused bits in a BIT
// STRING. Everything ParseFast accepts, x509.ParseCertificateRequest accepts too
// and reads the same way; everything else — another key type or curve,
// parameters after an algorithm, another attribute or extension, a SAN of
// another kind, a URI whose host is not a plain DNS name, a subject
// attribute of another form — it declines, and Parse hands the request
// to x509.ParseCertificateRequest (ParseX509). TestFastCSRMatchesX509 and FuzzCSRParse
// (ca/authority/leaf) hold the two parsers equal where the fast one accepts.
package csrparse
