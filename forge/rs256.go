package forge

import (
	"crypto"
	"crypto/fips140"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"

	"filippo.io/bigmod"
)

// rs256Key is an RSA public key prepared once, when its key set loads, for
// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) verification. crypto/rsa offers no
// way to keep a key's Montgomery constants and rebuilds them on every
// VerifyPKCS1v15; here they are built once (filippo.io/bigmod is the
// crypto/internal/fips140/bigmod that crypto/rsa itself runs, re-exported),
// so the hot path is one modular exponentiation and a comparison.
type rs256Key struct {
	pub *rsa.PublicKey
	// n is nil for a key the prepared path does not take: crypto/rsa
	// verifies with it instead, and refuses it if it refuses such keys.
	n *bigmod.Modulus
	e uint
	// encoded is the EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for this
	// modulus size, less the digest itself: 00 01 FF…FF 00 || DigestInfo.
	encoded []byte
}

// sha256DigestInfo is the DER prefix of a SHA-256 DigestInfo (RFC 8017
// §9.2, note 1): the digest's 32 bytes follow it.
var sha256DigestInfo = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// prepareRS256 prepares pub. The prepared path takes exactly the keys
// crypto/rsa's VerifyPKCS1v15 accepts under the default GODEBUG settings: an
// odd modulus of at least 1024 bits and an odd exponent from 3 to 2³¹-1. Any
// other key, and every key when the FIPS 140-3 mode is on (its module must do
// the work and apply its own rules), is left to crypto/rsa, which then
// answers as it always did: with an error for a key it refuses.
func prepareRS256(pub *rsa.PublicKey) *rs256Key {
	k := &rs256Key{pub: pub}
	if fips140.Enabled() || pub.N == nil || pub.N.Sign() <= 0 || pub.N.Bit(0) == 0 || pub.N.BitLen() < 1024 ||
		pub.E < 3 || pub.E&1 == 0 || pub.E > 1<<31-1 {
		return k
	}
	n, err := bigmod.NewModulus(pub.N.Bytes())
	if err != nil {
		return k
	}
	size := n.Size()
	// 00 01, at least 8 FF, 00, DigestInfo, digest: size >= 62 bytes, which
	// 1024 bits (128 bytes) always leave room for.
	encoded := make([]byte, size-sha256.Size)
	encoded[1] = 0x01
	ps := encoded[2 : len(encoded)-1-len(sha256DigestInfo)]
	for i := range ps {
		ps[i] = 0xff
	}
	copy(encoded[len(encoded)-len(sha256DigestInfo):], sha256DigestInfo)
	k.n, k.e, k.encoded = n, uint(pub.E), encoded
	return k
}

// verify checks sig, an RS256 signature of a message whose SHA-256 digest is
// digest, as RFC 8017 §8.2.2 says, strictly: sig is exactly as long as the
// modulus; as an integer it is below the modulus; s^e mod n, as bytes, equals
// byte for byte the complete encoding built here (never parsed). Failures
// are rsa.ErrVerification, as from crypto/rsa.
func (k *rs256Key) verify(digest *[sha256.Size]byte, sig []byte) error {
	if k.n == nil {
		return rsa.VerifyPKCS1v15(k.pub, crypto.SHA256, digest[:], sig)
	}
	// Step 1: the length check.
	if len(sig) != k.n.Size() {
		return rsa.ErrVerification
	}
	// Step 2 (OS2IP, RSAVP1, I2OSP): SetBytes refuses s >= n.
	s, err := bigmod.NewNat().SetBytes(sig, k.n)
	if err != nil {
		return rsa.ErrVerification
	}
	em := bigmod.NewNat().ExpShortVarTime(s, k.e, k.n).Bytes(k.n)
	// Steps 3 and 4: EM' = encoded || digest, compared with EM.
	at := len(k.encoded)
	if subtle.ConstantTimeCompare(em[:at], k.encoded)&subtle.ConstantTimeCompare(em[at:], digest[:]) != 1 {
		return rsa.ErrVerification
	}
	return nil
}
