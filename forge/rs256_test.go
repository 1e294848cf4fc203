package forge

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// The test keys (testdata/rs256, made for these tests only): the sizes
// Forge may use, an exponent of 3, and a modulus whose bit length is not a
// multiple of 8 (2044 bits: more same-length values lie above it).
var rs256TestKeyFiles = []string{"rsa2048.pem", "rsa3072.pem", "rsa4096.pem", "rsa2048e3.pem", "rsa2044.pem"}

var rs256TestKeys = sync.OnceValues(func() ([]*rsa.PrivateKey, error) {
	var keys []*rsa.PrivateKey
	for _, name := range rs256TestKeyFiles {
		b, err := os.ReadFile(filepath.Join("testdata", "rs256", name))
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, errors.New(name + ": no PEM block")
		}
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
})

func testKeys(t testing.TB) []*rsa.PrivateKey {
	t.Helper()
	keys, err := rs256TestKeys()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// rawSign is the RSA private operation on m (big-endian, any length, taken
// mod n), by the CRT: the signature of whatever encoding m holds,
// well-formed or not.
func rawSign(k *rsa.PrivateKey, m []byte) []byte {
	c := new(big.Int).SetBytes(m)
	c.Mod(c, k.N)
	p, q := k.Primes[0], k.Primes[1]
	m1 := new(big.Int).Exp(c, k.Precomputed.Dp, p)
	m2 := new(big.Int).Exp(c, k.Precomputed.Dq, q)
	h := m1.Sub(m1, m2)
	h.Mul(h, k.Precomputed.Qinv).Mod(h, p)
	s := h.Mul(h, q).Add(h, m2)
	return s.FillBytes(make([]byte, k.Size()))
}

// emsa is EMSA-PKCS1-v1_5-ENCODE(SHA-256, digest) for k, built from the RFC
// by hand, not by the code under test.
func emsa(k *rsa.PublicKey, digest []byte) []byte {
	t := append(bytes.Clone(sha256DigestInfo), digest...)
	em := []byte{0x00, 0x01}
	em = append(em, bytes.Repeat([]byte{0xff}, k.Size()-len(t)-3)...)
	em = append(em, 0x00)
	return append(em, t...)
}

// FuzzPreparedVerifyMatchesCryptoRSA holds the prepared RS256 verify to
// rsa.VerifyPKCS1v15 on the same key, digest and signature: both accept, or
// both refuse with the same error. The signatures are valid ones, and valid
// ones with a byte flipped, truncated, extended, prepended to, zero, one,
// n-1, n, above n, s+n, the fuzzer's bytes, the signature of an encoding
// with a byte changed or of the fuzzer's bytes, another message's, and a
// valid one without its leading zero bytes.
func FuzzPreparedVerifyMatchesCryptoRSA(f *testing.F) {
	keys := testKeys(f)
	prepared := make([]*rs256Key, len(keys))
	for i, k := range keys {
		if prepared[i] = prepareRS256(&k.PublicKey); prepared[i].n == nil {
			f.Fatalf("%s: the prepared path does not take it", rs256TestKeyFiles[i])
		}
	}
	for which := range len(keys) {
		for mode := range sigModes {
			f.Add(uint8(which), []byte("a message"), uint8(mode), uint16(which*37+mode), byte(mode), []byte{0x01, 0x00, 0xff})
		}
	}
	f.Add(uint8(0), []byte("x"), uint8(modePrepend), uint16(0), byte(0x00), []byte(nil))    // 00 || s: the same integer, k+1 bytes
	f.Add(uint8(0), []byte("m297"), uint8(modeMinimal), uint16(0), byte(0x00), []byte(nil)) // its signature starts with 00
	f.Add(uint8(1), []byte("m638"), uint8(modeMinimal), uint16(0), byte(0x00), []byte(nil)) // likewise
	f.Add(uint8(2), []byte("x"), uint8(modePlusN), uint16(0), byte(0x00), []byte(nil))      // s+n: the same class mod n
	// Encodings with one byte changed, on 2048, 3072, 4096 and 2044 bits:
	f.Add(uint8(0), []byte{}, uint8(modeEMFlip), uint16(0), byte(0x01), []byte(nil))         // 01 01 …
	f.Add(uint8(4), []byte("x"), uint8(modeEMFlip), uint16(1), byte(0x01), []byte(nil))      // block type 00
	f.Add(uint8(1), []byte("x"), uint8(modeEMFlip), uint16(384-52), byte(0xff), []byte(nil)) // the 00 before DigestInfo
	f.Add(uint8(1), []byte("x"), uint8(modeEMFlip), uint16(384-50), byte(0x04), []byte(nil)) // DigestInfo's length
	f.Add(uint8(2), []byte("x"), uint8(modeEMFlip), uint16(0xffff), byte(0x80), []byte(nil)) // the digest's last byte
	f.Fuzz(func(t *testing.T, which uint8, msg []byte, mode uint8, pos uint16, b byte, raw []byte) {
		priv := keys[int(which)%len(keys)]
		key := prepared[int(which)%len(keys)]
		pub := &priv.PublicKey
		digest := sha256.Sum256(msg)
		sig, valid := signatureFor(t, priv, digest[:], sigMode(mode%uint8(sigModes)), int(pos), b, raw)

		want := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
		got := key.verify(&digest, sig)
		if !sameError(got, want) {
			t.Fatalf("%d-bit key, mode %d, signature %x: prepared verify %v, crypto/rsa %v", pub.N.BitLen(), mode%uint8(sigModes), sig, got, want)
		}
		if valid && want != nil {
			t.Fatalf("mode %d: a valid signature refused: %v", mode%uint8(sigModes), want)
		}
	})
}

// sameError: both nil, or the same error (crypto/rsa makes a new one for each
// key it refuses: compared by message).
func sameError(a, b error) bool {
	return a == b || a != nil && b != nil && a.Error() == b.Error()
}

type sigMode uint8

const (
	modeValid        sigMode = iota
	modeFlip                 // a byte of a valid signature changed
	modeTruncate             // a valid signature cut short
	modeExtend               // bytes appended to a valid signature
	modePrepend              // a byte put before a valid signature
	modeZero                 // k zero bytes
	modeOne                  // s = 1
	modeNMinusOne            // s = n-1
	modeN                    // s = n
	modeAboveN               // n < s < 2^(8k)
	modePlusN                // a valid signature plus n, when it fits in k bytes
	modeRaw                  // the fuzzer's bytes
	modeRawK                 // the fuzzer's bytes, cut or zero-padded to k bytes
	modeEMFlip               // the signature of the right encoding with a byte changed
	modeEMRaw                // the signature of the fuzzer's bytes as the encoding
	modeOtherMessage         // a valid signature of another message
	modeMinimal              // a valid signature without its leading zero bytes: the same integer, shorter
	sigModes         = iota
)

// signatureFor builds the signature mode asks for; valid says it must verify.
func signatureFor(t *testing.T, priv *rsa.PrivateKey, digest []byte, mode sigMode, pos int, b byte, raw []byte) (sig []byte, valid bool) {
	k := priv.Size()
	n := priv.N
	validSig := func() []byte {
		s, err := rsa.SignPKCS1v15(nil, priv, crypto.SHA256, digest)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fit := func(x *big.Int) []byte { // x as k bytes, or all FF when it does not fit
		if (x.BitLen()+7)/8 > k {
			return bytes.Repeat([]byte{0xff}, k)
		}
		return x.FillBytes(make([]byte, k))
	}
	switch mode {
	case modeValid:
		return validSig(), true
	case modeFlip:
		s := validSig()
		s[pos%k] ^= max(b, 1)
		return s, false
	case modeTruncate:
		return validSig()[:pos%k], false
	case modeExtend:
		if len(raw) == 0 {
			raw = []byte{b}
		}
		return append(validSig(), raw...), false
	case modePrepend:
		return append([]byte{b}, validSig()...), false
	case modeZero:
		return make([]byte, k), false
	case modeOne:
		return fit(big.NewInt(1)), false
	case modeNMinusOne:
		return fit(new(big.Int).Sub(n, big.NewInt(1))), false
	case modeN:
		return fit(n), false
	case modeAboveN:
		return fit(new(big.Int).Add(n, big.NewInt(int64(pos)+1))), false
	case modePlusN:
		s := new(big.Int).SetBytes(validSig())
		return fit(s.Add(s, n)), false
	case modeRaw:
		return raw, false
	case modeRawK:
		s := make([]byte, k)
		copy(s[max(0, k-len(raw)):], raw[max(0, len(raw)-k):])
		return s, bytes.Equal(s, validSig())
	case modeEMFlip:
		em := emsa(&priv.PublicKey, digest)
		em[pos%k] ^= max(b, 1)
		return rawSign(priv, em), false
	case modeEMRaw:
		em := make([]byte, k)
		copy(em[max(0, k-len(raw)):], raw[max(0, len(raw)-k):])
		return rawSign(priv, em), bytes.Equal(em, emsa(&priv.PublicKey, digest))
	case modeOtherMessage:
		other := sha256.Sum256(raw)
		s, err := rsa.SignPKCS1v15(nil, priv, crypto.SHA256, other[:])
		if err != nil {
			t.Fatal(err)
		}
		return s, bytes.Equal(other[:], digest)
	case modeMinimal:
		s := validSig()
		return bytes.TrimLeft(s, "\x00"), s[0] != 0
	}
	t.Fatalf("no mode %d", mode)
	return nil, false
}

// TestPreparedVerifyValidSignatures: each test key verifies its own
// signatures on the prepared path, and refuses them under another key and
// for another digest.
func TestPreparedVerifyValidSignatures(t *testing.T) {
	keys := testKeys(t)
	for i, priv := range keys {
		key := prepareRS256(&priv.PublicKey)
		if key.n == nil {
			t.Fatalf("%s: not prepared", rs256TestKeyFiles[i])
		}
		digest := sha256.Sum256([]byte(rs256TestKeyFiles[i]))
		sig, err := rsa.SignPKCS1v15(nil, priv, crypto.SHA256, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		if err := key.verify(&digest, sig); err != nil {
			t.Errorf("%s: a valid signature refused: %v", rs256TestKeyFiles[i], err)
		}
		if !bytes.Equal(rawSign(priv, emsa(&priv.PublicKey, digest[:])), sig) {
			t.Errorf("%s: rawSign(emsa) is not the signature crypto/rsa makes", rs256TestKeyFiles[i])
		}
		other := digest
		other[0] ^= 1
		if err := key.verify(&other, sig); !errors.Is(err, rsa.ErrVerification) {
			t.Errorf("%s: another digest: %v, want rsa.ErrVerification", rs256TestKeyFiles[i], err)
		}
		otherKey := prepareRS256(&keys[(i+1)%len(keys)].PublicKey)
		if err := otherKey.verify(&digest, sig); !errors.Is(err, rsa.ErrVerification) {
			t.Errorf("%s: another key: %v, want rsa.ErrVerification", rs256TestKeyFiles[i], err)
		}
	}
}

// TestPrepareRS256TakesWhatCryptoRSATakes: the prepared path takes a key
// exactly when crypto/rsa would verify with it (its only error then is
// rsa.ErrVerification); every other key is left to crypto/rsa, which refuses
// it with its own error, and the verify answers what crypto/rsa answers.
func TestPrepareRS256TakesWhatCryptoRSATakes(t *testing.T) {
	base := testKeys(t)[0].PublicKey
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	even := new(big.Int).Add(base.N, big.NewInt(1))
	bits1023 := new(big.Int).Rsh(small.N, 1)
	bits1023.SetBit(bits1023, 0, 1)
	// Built at run time, so that the file compiles where int is 32 bits
	// (there they wrap to exponents refused anyway).
	one := uint64(1)
	above31, wide := int(one<<31+1), int(one<<40+1)
	for _, tc := range []struct {
		name string
		key  rsa.PublicKey
		take bool
	}{
		{"e=65537", base, true},
		{"e=3", rsa.PublicKey{N: base.N, E: 3}, true},
		{"e=2^31-1", rsa.PublicKey{N: base.N, E: 1<<31 - 1}, true},
		{"1024 bits", small.PublicKey, true},
		{"e=2^31+1", rsa.PublicKey{N: base.N, E: above31}, false},
		{"e=2^40+1", rsa.PublicKey{N: base.N, E: wide}, false},
		{"e=1", rsa.PublicKey{N: base.N, E: 1}, false},
		{"e=2", rsa.PublicKey{N: base.N, E: 2}, false},
		{"e=65536", rsa.PublicKey{N: base.N, E: 65536}, false},
		{"e=0", rsa.PublicKey{N: base.N, E: 0}, false},
		{"e=-3", rsa.PublicKey{N: base.N, E: -3}, false},
		{"even modulus", rsa.PublicKey{N: even, E: 65537}, false},
		{"1023 bits", rsa.PublicKey{N: bits1023, E: 65537}, false},
		{"no modulus", rsa.PublicKey{E: 65537}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := tc.key
			key := prepareRS256(&pub)
			if took := key.n != nil; took != tc.take {
				t.Fatalf("prepared: %v, want %v", took, tc.take)
			}
			digest := sha256.Sum256([]byte(tc.name))
			sig := make([]byte, 256)
			if pub.N != nil {
				sig = make([]byte, pub.Size())
			}
			sig[len(sig)-1] = 2
			want := rsa.VerifyPKCS1v15(&pub, crypto.SHA256, digest[:], sig)
			if tc.take != errors.Is(want, rsa.ErrVerification) {
				t.Fatalf("crypto/rsa answers %v: the table is wrong", want)
			}
			if got := key.verify(&digest, sig); !sameError(got, want) {
				t.Errorf("verify: %v, crypto/rsa: %v", got, want)
			}
		})
	}
}

// TestLoadedKeysArePrepared: the keys a key set brings are prepared as it
// loads, so Verify never falls back to building a modulus per call.
func TestLoadedKeysArePrepared(t *testing.T) {
	var published []*forgetest.Key
	for i, priv := range testKeys(t)[:3] {
		published = append(published, &forgetest.Key{Kid: rs256TestKeyFiles[i], Private: priv, Alg: "RS256", Use: "sig"})
	}
	srv := forgetest.NewJWKSServer(t, published...)
	v, err := NewVerifier(t.Context(), VerifierConfig{AppID: forgetest.AppID, JWKSURL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	keys := v.keys.Load()
	if keys == nil {
		t.Fatalf("no key set loaded: %v", v.Ready())
	}
	for _, k := range published {
		got, ok := (*keys)[k.Kid]
		switch {
		case !ok:
			t.Errorf("%s: not loaded", k.Kid)
		case got.key.n == nil:
			t.Errorf("%s: loaded but not prepared", k.Kid)
		case got.key.pub.N.Cmp(k.Private.N) != 0 || got.key.e != uint(k.Private.E):
			t.Errorf("%s: prepared from another key", k.Kid)
		}
	}
}

// BenchmarkRS256VerifyPrepared is BenchmarkRS256VerifyBare (the bare
// rsa.VerifyPKCS1v15) on the prepared key: same 2048-bit key size, digest
// computed beforehand. Both run here, side by side.
func BenchmarkRS256VerifyPrepared(b *testing.B) {
	priv := testKeys(b)[0]
	digest := sha256.Sum256([]byte("the signing input"))
	sig, err := rsa.SignPKCS1v15(nil, priv, crypto.SHA256, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("crypto_rsa", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := rsa.VerifyPKCS1v15(&priv.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("prepared", func(b *testing.B) {
		key := prepareRS256(&priv.PublicKey)
		b.ReportAllocs()
		for b.Loop() {
			if err := key.verify(&digest, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}
