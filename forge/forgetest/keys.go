// Package forgetest is test support for code that receives Forge calls: RSA
// key pairs, a fake JWKS endpoint, and realistic FITs and app system tokens.
package forgetest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// Key is a signing key pair as Forge holds one. Alg and Use are what the JWKS
// publishes for it; change them (or use WithAlg) before the key is published.
type Key struct {
	Kid     string
	Private *rsa.PrivateKey
	Alg     string // published `alg`; NewKey sets "RS256", "" leaves it out
	Use     string // published `use`; NewKey sets "sig", "" leaves it out
}

// NewKey generates an RSA 2048 key pair published as kid.
func NewKey(t testing.TB, kid string) *Key {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("forgetest: generate RSA key: %v", err)
	}
	return &Key{Kid: kid, Private: priv, Alg: "RS256", Use: "sig"}
}

// WithAlg is a copy of k published with another `alg` ("" = none).
func (k *Key) WithAlg(alg string) *Key {
	c := *k
	c.Alg = alg
	return &c
}

// Public is the public half of the key.
func (k *Key) Public() *rsa.PublicKey { return &k.Private.PublicKey }

// PublicPEM is the public key as a PKIX PEM block: the bytes an HS256
// key-confusion attack uses as its HMAC secret.
func (k *Key) PublicPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		panic("forgetest: marshal public key: " + err.Error()) // cannot happen for RSA
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// JWK is the public key as Forge's JWKS publishes it.
func (k *Key) JWK() map[string]any {
	pub := k.Public()
	m := map[string]any{
		"kty": "RSA",
		"kid": k.Kid,
		"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
	if k.Alg != "" {
		m["alg"] = k.Alg
	}
	if k.Use != "" {
		m["use"] = k.Use
	}
	return m
}

// JWKSServer is a fake Forge JWKS endpoint that counts its hits. It is closed
// when the test ends.
type JWKSServer struct {
	srv     *httptest.Server
	fetches atomic.Int64
	stop    chan struct{} // closed at cleanup: releases Hang

	mu      sync.Mutex
	keys    []*Key
	down    bool
	handler http.HandlerFunc
}

// NewJWKSServer publishes keys at URL().
func NewJWKSServer(t testing.TB, keys ...*Key) *JWKSServer {
	t.Helper()
	s := &JWKSServer{keys: keys, stop: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		close(s.stop)
		s.srv.Close()
	})
	return s
}

// URL is the address of the key set.
func (s *JWKSServer) URL() string { return s.srv.URL + "/.well-known/jwks.json" }

// Fetches counts every request the server received, failed ones included.
func (s *JWKSServer) Fetches() int { return int(s.fetches.Load()) }

// SetKeys replaces the published keys (a rotation).
func (s *JWKSServer) SetKeys(keys ...*Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = keys
}

// SetDown makes the server answer 500 (true) or serve its keys again (false).
func (s *JWKSServer) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// SetHandler answers every request with h instead (fault injection: garbage,
// slowness, Hang); nil restores the normal behaviour.
func (s *JWKSServer) SetHandler(h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// Hang is a handler that never answers: it returns only when the client gives
// up or the server closes. Use it as SetHandler(s.Hang).
func (s *JWKSServer) Hang(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.stop:
	}
}

func (s *JWKSServer) serve(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	keys, down, h := s.keys, s.down, s.handler
	s.mu.Unlock()
	switch {
	case h != nil:
		h(w, r)
	case down:
		http.Error(w, `{"error":"unavailable"}`, http.StatusInternalServerError)
	default:
		set := struct {
			Keys []map[string]any `json:"keys"`
		}{Keys: make([]map[string]any, 0, len(keys))}
		for _, k := range keys {
			set.Keys = append(set.Keys, k.JWK())
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_ = json.NewEncoder(w).Encode(set)
	}
}
