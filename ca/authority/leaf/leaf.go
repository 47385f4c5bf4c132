package leaf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers used by the leaf encoder (RFC 5280, RFC 5758, RFC 8017).
var (
	oidSigECDSAWithSHA256 = []int{1, 2, 840, 10045, 4, 3, 2}
	oidSigECDSAWithSHA384 = []int{1, 2, 840, 10045, 4, 3, 3}
	oidSigSHA256WithRSA   = []int{1, 2, 840, 113549, 1, 1, 11}

	oidExtKeyUsage         = []int{2, 5, 29, 15}
	oidExtExtKeyUsage      = []int{2, 5, 29, 37}
	oidExtBasicConstraints = []int{2, 5, 29, 19}
	oidExtAuthorityKeyID   = []int{2, 5, 29, 35}
	oidExtSubjectAltName   = []int{2, 5, 29, 17}
)

// ekuOIDs maps the extended key usages a cfssl profile can name to their
// OIDs, as crypto/x509 encodes them.
var ekuOIDs = map[x509.ExtKeyUsage][]int{
	x509.ExtKeyUsageAny:                            {2, 5, 29, 37, 0},
	x509.ExtKeyUsageServerAuth:                     {1, 3, 6, 1, 5, 5, 7, 3, 1},
	x509.ExtKeyUsageClientAuth:                     {1, 3, 6, 1, 5, 5, 7, 3, 2},
	x509.ExtKeyUsageCodeSigning:                    {1, 3, 6, 1, 5, 5, 7, 3, 3},
	x509.ExtKeyUsageEmailProtection:                {1, 3, 6, 1, 5, 5, 7, 3, 4},
	x509.ExtKeyUsageIPSECEndSystem:                 {1, 3, 6, 1, 5, 5, 7, 3, 5},
	x509.ExtKeyUsageIPSECTunnel:                    {1, 3, 6, 1, 5, 5, 7, 3, 6},
	x509.ExtKeyUsageIPSECUser:                      {1, 3, 6, 1, 5, 5, 7, 3, 7},
	x509.ExtKeyUsageTimeStamping:                   {1, 3, 6, 1, 5, 5, 7, 3, 8},
	x509.ExtKeyUsageOCSPSigning:                    {1, 3, 6, 1, 5, 5, 7, 3, 9},
	x509.ExtKeyUsageMicrosoftServerGatedCrypto:     {1, 3, 6, 1, 4, 1, 311, 10, 3, 3},
	x509.ExtKeyUsageNetscapeServerGatedCrypto:      {2, 16, 840, 1, 113730, 4, 1},
	x509.ExtKeyUsageMicrosoftCommercialCodeSigning: {1, 3, 6, 1, 4, 1, 311, 2, 1, 22},
	x509.ExtKeyUsageMicrosoftKernelCodeSigning:     {1, 3, 6, 1, 4, 1, 311, 61, 1, 1},
}

// SigAlg is how an issuer key signs: the AlgorithmIdentifier and the hash.
// Get one from AlgorithmFor.
type SigAlg struct {
	oid  []int
	null bool // parameters NULL (RSA PKCS #1 v1.5); absent for ECDSA (RFC 5758 3.2)
	hash crypto.Hash
	x509 x509.SignatureAlgorithm // as crypto/x509 names it
}

// AlgorithmFor picks the signature algorithm crypto/x509 would pick for key:
// ecdsa-with-SHA256 for P-256, ecdsa-with-SHA384 for P-384 and
// sha256WithRSAEncryption for RSA.
func AlgorithmFor(key crypto.Signer) (SigAlg, error) {
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return SigAlg{oid: oidSigECDSAWithSHA256, hash: crypto.SHA256, x509: x509.ECDSAWithSHA256}, nil
		case elliptic.P384():
			return SigAlg{oid: oidSigECDSAWithSHA384, hash: crypto.SHA384, x509: x509.ECDSAWithSHA384}, nil
		}
		return SigAlg{}, fmt.Errorf("authority: unsupported CA curve %s", CurveName(pub.Curve))
	case *rsa.PublicKey:
		return SigAlg{oid: oidSigSHA256WithRSA, null: true, hash: crypto.SHA256, x509: x509.SHA256WithRSA}, nil
	}
	return SigAlg{}, fmt.Errorf("authority: unsupported CA key type %T", key.Public())
}

func (s SigAlg) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(s.oid)
		if s.null {
			b.AddASN1NULL()
		}
	})
}

// digest hashes msg with s.hash.
func (s SigAlg) digest(msg []byte) []byte {
	switch s.hash {
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:]
	default:
		d := sha256.Sum256(msg)
		return d[:]
	}
}

// Create encodes and signs the leaf described by tmpl, issued by issuer
// with key over pub, and returns the DER certificate. It is equivalent to
//
//	x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, key)
//
// for the templates Template builds, but signs once instead of signing
// and then verifying the signature (see ca/authority's package comment); the tests
// compare the two field by field and FuzzLeafTBS byte for byte. Like
// crypto/x509 it marshals pub afresh rather than copying a CSR's
// SubjectPublicKeyInfo, which the CSR parser accepts with bytes it ignores
// (after or inside an RSA key) that must not reach a signed leaf. It reads only SerialNumber, NotBefore,
// NotAfter, DNSNames and IPAddresses (set by SignServer only), URIs, KeyUsage, ExtKeyUsage, BasicConstraintsValid, IsCA and
// AuthorityKeyId (Template sets it to the issuer's SubjectKeyId, which
// is what crypto/x509 would use), and refuses CA templates. The subject is empty, so the
// SAN extension is critical (RFC 5280 4.2.1.6).
func Create(tmpl, issuer *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte, error) {
	if tmpl.IsCA {
		return nil, errors.New("authority: leaf encoder cannot issue CA certificates")
	}
	if tmpl.SerialNumber == nil || tmpl.SerialNumber.Sign() <= 0 {
		return nil, errors.New("authority: leaf serial number must be positive")
	}
	alg, err := AlgorithmFor(key)
	if err != nil {
		return nil, err
	}
	exts, err := leafExtensions(tmpl)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("authority: leaf public key: %w", err)
	}
	tbs, err := encodeTBS(tmpl, issuer, alg, spki, exts)
	if err != nil {
		return nil, err
	}
	sig, err := signTBS(tbs, alg, key)
	if err != nil {
		return nil, err
	}
	return encodeCertificate(tbs, alg, sig)
}

// Starting capacities of the encoder's buffers, about what a P-256 leaf
// needs, so that building one does not grow them again and again (their
// size never changes the bytes produced).
const (
	tbsCap        = 512
	certOverhead  = 128 // algorithm, signature and headers around the TBS
	extensionsCap = 256
)

// encodeTBS encodes the TBSCertificate: v3, tmpl's serial, alg, issuer's
// raw subject, tmpl's validity, an empty subject, spki and the extensions
// exts.
func encodeTBS(tmpl, issuer *x509.Certificate, alg SigAlg, spki, exts []byte) ([]byte, error) {
	tb := cryptobyte.NewBuilder(make([]byte, 0, tbsCap))
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(2) // v3
		})
		b.AddASN1BigInt(tmpl.SerialNumber)
		alg.marshal(b)
		b.AddBytes(issuer.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, tmpl.NotBefore)
			addTime(b, tmpl.NotAfter)
		})
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // empty subject
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddBytes(exts)
		})
	})
	tbs, err := tb.Bytes()
	if err != nil {
		return nil, fmt.Errorf("authority: encode leaf: %w", err)
	}
	return tbs, nil
}

// signTBS signs tbs with key. An RSA signature is verified before it is
// returned, as crypto/x509 does; an ECDSA one is not.
func signTBS(tbs []byte, alg SigAlg, key crypto.Signer) ([]byte, error) {
	sig, err := key.Sign(rand.Reader, alg.digest(tbs), alg.hash)
	if err != nil {
		return nil, fmt.Errorf("authority: sign leaf: %w", err)
	}
	if pub, ok := key.Public().(*rsa.PublicKey); ok {
		// Verifying an RSA signature costs ~1% of making one; keep
		// crypto/x509's check against a faulty signer there. For ECDSA the
		// check would double the cost of issuance.
		if err := rsa.VerifyPKCS1v15(pub, alg.hash, alg.digest(tbs), sig); err != nil {
			return nil, fmt.Errorf("authority: leaf signature does not verify: %w", err)
		}
	}
	return sig, nil
}

// encodeCertificate wraps tbs, its signature algorithm and sig into a
// Certificate.
func encodeCertificate(tbs []byte, alg SigAlg, sig []byte) ([]byte, error) {
	cb := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+certOverhead))
	cb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		alg.marshal(b)
		b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
			b.AddUint8(0) // no unused bits
			b.AddBytes(sig)
		})
	})
	return cb.Bytes()
}

// leafExtensions encodes the extensions of a leaf, in the order and with the
// criticality crypto/x509 uses: key usage, extended key usage, basic
// constraints, authority key ID, subject alternative names, each only when
// tmpl asks for it.
func leafExtensions(tmpl *x509.Certificate) ([]byte, error) {
	b := cryptobyte.NewBuilder(make([]byte, 0, extensionsCap))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if tmpl.KeyUsage != 0 {
			addExtension(b, oidExtKeyUsage, true, func(b *cryptobyte.Builder) {
				addKeyUsage(b, tmpl.KeyUsage)
			})
		}
		if len(tmpl.ExtKeyUsage) > 0 {
			addExtension(b, oidExtExtKeyUsage, false, func(b *cryptobyte.Builder) {
				addExtKeyUsage(b, tmpl.ExtKeyUsage)
			})
		}
		if tmpl.BasicConstraintsValid {
			// CA:false is the DEFAULT and there is no pathLen: an empty SEQUENCE.
			addExtension(b, oidExtBasicConstraints, true, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
			})
		}
		if aki := tmpl.AuthorityKeyId; len(aki) > 0 {
			addExtension(b, oidExtAuthorityKeyID, false, func(b *cryptobyte.Builder) {
				addAuthorityKeyID(b, aki)
			})
		}
		if len(tmpl.DNSNames)+len(tmpl.IPAddresses)+len(tmpl.URIs) > 0 {
			addExtension(b, oidExtSubjectAltName, true, func(b *cryptobyte.Builder) {
				addSubjectAltNames(b, tmpl)
			})
		}
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("authority: encode leaf extensions: %w", err)
	}
	return der, nil
}

// addExtKeyUsage adds the ExtKeyUsageSyntax SEQUENCE of OIDs.
func addExtKeyUsage(b *cryptobyte.Builder, usages []x509.ExtKeyUsage) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, u := range usages {
			oid, ok := ekuOIDs[u]
			if !ok {
				b.SetError(fmt.Errorf("unknown extended key usage %d", u))
				return
			}
			b.AddASN1ObjectIdentifier(oid)
		}
	})
}

// addAuthorityKeyID adds the AuthorityKeyIdentifier SEQUENCE with only its
// keyIdentifier [0].
func addAuthorityKeyID(b *cryptobyte.Builder, aki []byte) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddBytes(aki)
		})
	})
}

// addSubjectAltNames adds the GeneralNames SEQUENCE in crypto/x509's order:
// dNSName [2], then iPAddress [7] (IPv4 in 4 bytes), then
// uniformResourceIdentifier [6].
func addSubjectAltNames(b *cryptobyte.Builder, tmpl *x509.Certificate) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, name := range tmpl.DNSNames {
			if !isIA5(name) {
				b.SetError(fmt.Errorf("DNS SAN %q is not IA5String", name))
				return
			}
			b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddBytes([]byte(name))
			})
		}
		for _, ip := range tmpl.IPAddresses {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
				b.SetError(fmt.Errorf("IP SAN %v is not an IPv4 or IPv6 address", ip))
				return
			}
			b.AddASN1(cbasn1.Tag(7).ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddBytes(ip)
			})
		}
		for _, u := range tmpl.URIs {
			s := u.String()
			if !isIA5(s) {
				b.SetError(fmt.Errorf("URI SAN %q is not IA5String", s))
				return
			}
			b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddBytes([]byte(s))
			})
		}
	})
}

// addExtension adds one Extension; critical is omitted when false (DER
// leaves out DEFAULT values).
func addExtension(b *cryptobyte.Builder, oid []int, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// addKeyUsage adds the KeyUsage BIT STRING: bit 0 (digitalSignature) is the
// most significant bit of the first byte, and trailing zero bits are left
// out (DER for a named bit list, X.690 11.2.2).
func addKeyUsage(b *cryptobyte.Builder, ku x509.KeyUsage) {
	bs := []byte{reverseBits(byte(ku)), reverseBits(byte(ku >> 8))}
	if bs[1] == 0 {
		bs = bs[:1]
	}
	last := bs[len(bs)-1]
	if last == 0 {
		b.SetError(fmt.Errorf("key usage %#x has no bit RFC 5280 defines", int(ku)))
		return
	}
	unused := uint8(0)
	for last&1 == 0 {
		last >>= 1
		unused++
	}
	b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
		b.AddUint8(unused)
		b.AddBytes(bs)
	})
}

func reverseBits(v byte) byte {
	var r byte
	for range 8 {
		r = r<<1 | v&1
		v >>= 1
	}
	return r
}

// addTime adds t as UTCTime for years 1950 through 2049 and as
// GeneralizedTime otherwise (RFC 5280 4.1.2.5), in UTC and truncated to the
// second, as crypto/x509 does.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
		return
	}
	b.AddASN1GeneralizedTime(t)
}

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] > 0x7f {
			return false
		}
	}
	return true
}
