// Package connecttest is test support for Connect's signed install callbacks:
// a fake install key server that counts its hits, and signed install tokens
// and bodies as Atlassian sends them.
package connecttest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// KeyServer is a fake of Atlassian's install key server
// (https://connect-install-keys.atlassian.com/<kid> → PEM public key). It is
// closed when the test ends.
type KeyServer struct {
	srv  *httptest.Server
	hits atomic.Int64

	mu   sync.Mutex
	keys map[string]*forgetest.Key
	down bool
}

// NewKeyServer publishes keys by their Kid.
func NewKeyServer(t testing.TB, keys ...*forgetest.Key) *KeyServer {
	t.Helper()
	s := &KeyServer{keys: map[string]*forgetest.Key{}}
	for _, k := range keys {
		s.keys[k.Kid] = k
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the server's root: CONNECT_KEYS_URL.
func (s *KeyServer) URL() string { return s.srv.URL }

// Hits counts every request received.
func (s *KeyServer) Hits() int { return int(s.hits.Load()) }

// SetDown makes the server answer 503 (true) or serve its keys again.
func (s *KeyServer) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// Publish adds a key (a rotation: new kid).
func (s *KeyServer) Publish(k *forgetest.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[k.Kid] = k
}

func (s *KeyServer) serve(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	k, down := s.keys[strings.TrimPrefix(r.URL.Path, "/")], s.down
	s.mu.Unlock()
	switch {
	case down:
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	case r.Method != http.MethodGet || k == nil:
		http.Error(w, "Not Found", http.StatusNotFound)
	default:
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(k.PublicPEM())
	}
}

// Install is a Connect lifecycle callback as Atlassian signs it.
type Install struct {
	AppKey, ClientKey, SharedSecret, BaseURL, InstallationID, Event string

	// The token: Aud is the app's baseUrl; Path the callback path the qsh
	// covers, relative to it (e.g. "/installed").
	Aud, Path string
	Now       time.Time // zero: time.Now()
	Lifetime  time.Duration
	Iss       string // "": ClientKey
	QSH       string // "": computed for POST Path

	// Edit changes the signed header and claims last (attacks).
	Edit func(header, claims map[string]any)
}

// Body is the JSON body of the callback, with the fields Atlassian sends.
func (i Install) Body() string {
	b := map[string]any{
		"key":            i.AppKey,
		"clientKey":      i.ClientKey,
		"baseUrl":        i.BaseURL,
		"displayUrl":     i.BaseURL,
		"productType":    "confluence",
		"description":    "Atlassian Confluence at " + i.BaseURL,
		"eventType":      i.Event,
		"oauthClientId":  "oauth-client-1",
		"serverVersion":  "6452",
		"pluginsVersion": "1001.0.0-SNAPSHOT",
	}
	if i.SharedSecret != "" {
		b["sharedSecret"] = i.SharedSecret
	}
	if i.InstallationID != "" {
		b["installationId"] = i.InstallationID
	}
	out, _ := json.Marshal(b)
	return string(out)
}

// Token signs the callback's JWT with key (RS256, kid = key.Kid) unless Edit
// changes the method; an "alg" edit to HS256 signs with the key's PEM as the
// HMAC secret (the key-confusion attack), to "none" with no signature.
func (i Install) Token(t testing.TB, key *forgetest.Key) string {
	t.Helper()
	now := i.Now
	if now.IsZero() {
		now = time.Now()
	}
	life := i.Lifetime
	if life == 0 {
		life = 3 * time.Minute
	}
	qsh := i.QSH
	if qsh == "" {
		qsh = connect.QueryStringHash("POST", i.Path, "", "")
	}
	iss := i.Iss
	if iss == "" {
		iss = i.ClientKey
	}
	claims := map[string]any{
		"iss": iss, "aud": i.Aud, "qsh": qsh, "sub": "",
		"iat": now.Unix(), "exp": now.Add(life).Unix(), "context": map[string]any{},
	}
	header := map[string]any{"alg": "RS256", "typ": "JWT", "kid": key.Kid}
	if i.Edit != nil {
		i.Edit(header, claims)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(claims))
	tok.Header = header
	var signKey any = key.Private
	switch header["alg"] {
	case "HS256":
		tok.Method, signKey = jwt.SigningMethodHS256, key.PublicPEM()
	case "none":
		tok.Method, signKey = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType
	}
	s, err := tok.SignedString(signKey)
	if err != nil {
		t.Fatalf("connecttest: signing: %v", err)
	}
	return s
}
