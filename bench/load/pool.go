package main

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// The claim shape is forgetest's (forge/forgetest/fit.go); only the values
// that make every FIT distinct and spread it over users and sites differ.
const (
	poolVersion  = 2
	poolLifetime = 30 * 24 * time.Hour // exp of a freshly signed pool
	poolMinLeft  = 24 * time.Hour      // re-sign a cached pool with less life left
	keyBits      = 2048
	// apiBaseUrl points at a closed loopback port: the bench must never send
	// anything off the machine, even if a server under test called it.
	apiBasePrefix = "https://127.0.0.1:9/ex/confluence/"
)

// signer is the benchmark's Forge: one RSA key published under kid.
type signer struct {
	kid string
	key *rsa.PrivateKey
}

// jwks is the key set document that publishes the signer's public key.
func (s *signer) jwks() []byte {
	pub := &s.key.PublicKey
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{
		"kty": "RSA", "kid": s.kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	return b
}

// pool is the set of pre-signed FITs a run draws from.
type pool struct {
	Header poolHeader
	FITs   []string
	// UserOf[i] is the user index FITs[i] was signed for. The first Users
	// FITs are users 0..Users-1 in order: the warm-up uses them.
	UserOf []int
}

type poolHeader struct {
	Version  int    `json:"version"`
	Kid      string `json:"kid"`
	AppID    string `json:"app_id"`
	Users    int    `json:"users"`
	Installs int    `json:"installs"`
	N        int    `json:"n"`
	IssuedAt int64  `json:"iat"`
	Exp      int64  `json:"exp"`
}

// The ids are random-looking, as Forge's are (v4 UUIDs), but fixed per index
// so that cached pools stay valid. Sequential ids would insert every
// installation's records into the store in key order, a pattern real
// installations never produce and one that leaves B-tree pages half full.
func accountID(user int) string        { return "712020:" + benchUUID("user", user) }
func installOf(user, installs int) int { return user % installs }
func installationID(i int) string {
	return "ari:cloud:ecosystem::installation/" + benchUUID("installation", i)
}
func cloudID(i int) string { return benchUUID("cloud", i) }

// benchUUID is a v4-shaped UUID derived from (kind, i).
func benchUUID(kind string, i int) string {
	b := sha256.Sum256(fmt.Appendf(nil, "forge-remote-bench/%s/%d", kind, i))
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// loadSigner reads the cached signing key, or makes and caches a new one.
func loadSigner(dir string) (*signer, error) {
	path := filepath.Join(dir, "key.pem")
	if b, err := os.ReadFile(path); err == nil {
		if blk, _ := pem.Decode(b); blk != nil {
			if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
				if rk, ok := k.(*rsa.PrivateKey); ok && rk.N.BitLen() == keyBits {
					return &signer{kid: blk.Headers["kid"], key: rk}, nil
				}
			}
		}
	}
	k, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	kid := "forge-bench/" + randomHex(8)
	blk := &pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"kid": kid}, Bytes: der}
	if err := writeAtomic(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	return &signer{kid: kid, key: k}, nil
}

// loadPool returns a cached pool for these parameters when it was signed by
// s and has enough life left; otherwise it signs a new one and caches it.
func loadPool(dir string, s *signer, users, installs, n int, now time.Time, log io.Writer) (*pool, error) {
	path := filepath.Join(dir, fmt.Sprintf("fits-u%d-i%d-n%d.txt", users, installs, n))
	if p, err := readPool(path); err == nil {
		h := p.Header
		if h.Version == poolVersion && h.Kid == s.kid && h.AppID == forgetest.AppID && h.Users == users &&
			h.Installs == installs && h.N == n && time.Unix(h.Exp, 0).After(now.Add(poolMinLeft)) {
			return p, nil
		}
	}
	fmt.Fprintf(log, "signing %d FITs for %d users (cached in %s)…\n", n, users, dir)
	start := time.Now()
	p, err := signPool(s, users, installs, n, now)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "signed in %s\n", time.Since(start).Round(time.Millisecond))
	if err := writePool(path, p); err != nil {
		return nil, err
	}
	return p, nil
}

func signPool(s *signer, users, installs, n int, now time.Time) (*pool, error) {
	iat := now.Add(-time.Minute) // a little in the past: no nbf trouble with a skewed server
	p := &pool{
		Header: poolHeader{Version: poolVersion, Kid: s.kid, AppID: forgetest.AppID, Users: users,
			Installs: installs, N: n, IssuedAt: iat.Unix(), Exp: iat.Add(poolLifetime).Unix()},
		FITs:   make([]string, n),
		UserOf: make([]int, n),
	}
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				u := i % users
				fit, err := signFIT(s, p.Header, u, installOf(u, installs))
				if err != nil {
					errs[w] = err
					return
				}
				p.FITs[i], p.UserOf[i] = fit, u
			}
		}()
	}
	wg.Wait()
	return p, errors.Join(errs...)
}

// signFIT signs one FIT shaped as forgetest.MintFIT shapes it, with a unique jti.
func signFIT(s *signer, h poolHeader, user, install int) (string, error) {
	inst, cloud := installationID(install), cloudID(install)
	apiBase := apiBasePrefix + cloud
	claims := jwt.MapClaims{
		"iss": forgetest.FITIssuer,
		"aud": h.AppID,
		"iat": h.IssuedAt,
		"nbf": h.IssuedAt,
		"exp": h.Exp,
		"jti": randomUUID(),
		"app": map[string]any{
			"id":             h.AppID,
			"installationId": inst,
			"apiBaseUrl":     apiBase,
			"appVersion":     forgetest.AppVersion,
			"environment":    map[string]any{"type": "DEVELOPMENT", "id": forgetest.EnvironmentID},
			"module":         map[string]any{"type": "xen:macro", "key": forgetest.ModuleKey},
			"installation": map[string]any{
				"id": inst,
				"contexts": []any{map[string]any{
					"name":       "ari:cloud:confluence::site/" + cloud,
					"apiBaseUrl": apiBase,
					"cloudId":    cloud,
				}},
			},
		},
		"principal": accountID(user),
		"context": map[string]any{
			"cloudId":   cloud,
			"moduleKey": forgetest.ModuleKey,
			"siteUrl":   forgetest.SiteURL,
			"localId":   "6a1e7c52-3b9d-4f80-a2c4-9d8e7f6a5b4c",
			"accountId": accountID(user),
			"extension": map[string]any{"type": "macro", "content": map[string]any{"id": "98305"}},
		},
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = s.kid
	return tok.SignedString(s.key)
}

// The cache file: a JSON header line, then "user FIT" lines.
func writePool(path string, p *pool) error {
	var b strings.Builder
	hdr, _ := json.Marshal(p.Header)
	b.Grow(len(p.FITs) * (len(p.FITs[0]) + 8))
	b.Write(hdr)
	b.WriteByte('\n')
	for i, f := range p.FITs {
		fmt.Fprintf(&b, "%d %s\n", p.UserOf[i], f)
	}
	return writeAtomic(path, []byte(b.String()), 0o600)
}

func readPool(path string) (*pool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return nil, errors.New("empty pool file")
	}
	p := new(pool)
	if err := json.Unmarshal(sc.Bytes(), &p.Header); err != nil {
		return nil, err
	}
	p.FITs = make([]string, 0, p.Header.N)
	p.UserOf = make([]int, 0, p.Header.N)
	for sc.Scan() {
		us, fit, ok := strings.Cut(sc.Text(), " ")
		u, err := strconv.Atoi(us)
		if !ok || err != nil || strings.Count(fit, ".") != 2 {
			return nil, errors.New("corrupt pool file")
		}
		p.FITs = append(p.FITs, fit)
		p.UserOf = append(p.UserOf, u)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(p.FITs) != p.Header.N {
		return nil, errors.New("truncated pool file")
	}
	return p, nil
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// mintAppToken makes an x-forge-oauth-system token shaped as
// forgetest.MintAppToken makes one: a JWT-looking string whose payload has exp;
// the signature is random (the token is opaque to the server).
func mintAppToken(exp time.Time) string {
	seg := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	iat := exp.Add(-3 * time.Hour)
	sig := make([]byte, 256)
	_, _ = rand.Read(sig)
	return seg(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "forge/app-system-token/" + randomUUID()}) + "." +
		seg(map[string]any{
			"iss": "https://auth.atlassian.com", "sub": "712020:app-system-user-" + randomUUID(),
			"aud": "api.atlassian.com", "iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(),
			"jti": randomUUID(), "https://atlassian.com/appId": forgetest.AppID,
			"scope": "read:app-system-token read:confluence-user",
		}) + "." + base64.RawURLEncoding.EncodeToString(sig)
}
