package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// BenchmarkTokenHit measures the warm path through the whole Gin stack: body
// limit, FIT verification (a distinct, freshly signed FIT per request), app
// token capture, resolver dispatch, cache hit, JSON answer.
func BenchmarkTokenHit(b *testing.B) {
	key := forgetest.NewKey(b, "k1")
	srv, wv := newServer(b, key)

	const users = 200
	const pool = 4000
	appTok := forgetest.MintAppToken(b, time.Now().Add(3*time.Hour))
	fits := make([]string, pool)
	for i := range fits {
		fits[i] = "Bearer " + forgetest.MintFIT(b, key,
			forgetest.WithPrincipal(fmt.Sprintf("5b10ac8d82e05b22cc7d%04d", i%users)),
			forgetest.WithTimes(time.Now(), time.Now().Add(time.Hour)))
	}
	body := []byte(`{"refresh":false}`)
	do := func(fit string) int {
		req := httptest.NewRequest(http.MethodPost, "/resolvers/token", bytes.NewReader(body))
		req.Header.Set("Authorization", fit)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-forge-oauth-system", appTok)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		return w.Code
	}
	for i := range users { // warm every user
		if c := do(fits[i]); c != http.StatusOK {
			b.Fatalf("warm-up: %d", c)
		}
	}
	mints := wv.Mints()
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if c := do(fits[int(n.Add(1))%pool]); c != http.StatusOK {
				b.Errorf("status %d", c)
				return
			}
		}
	})
	b.StopTimer()
	if wv.Mints() != mints {
		b.Fatalf("the hit path minted %d tokens", wv.Mints()-mints)
	}
}

// BenchmarkChatWarm measures a warm chat open through the whole stack: a
// user whose "can view" verdict (CHAT_RECHECK) and membership are held in
// memory. It asks Confluence and Weavy nothing, which it checks.
func BenchmarkChatWarm(b *testing.B) {
	key := forgetest.NewKey(b, "k1")
	srv, wv := newServer(b, key)
	conf := forgetest.NewConfluenceWith(b, confluencesim.Options{AnyContent: true})

	const users = 200
	const pool = 4000
	appTok := forgetest.MintAppToken(b, time.Now().Add(3*time.Hour))
	type call struct{ fit, user string }
	calls := make([]call, pool)
	userToks := make([]string, users)
	for i := range users {
		userToks[i] = conf.IssueUserToken(b, fmt.Sprintf("5b10ac8d82e05b22cc7d%04d", i), time.Now().Add(4*time.Hour))
	}
	for i := range calls {
		calls[i] = call{"Bearer " + forgetest.MintFIT(b, key,
			forgetest.WithPrincipal(fmt.Sprintf("5b10ac8d82e05b22cc7d%04d", i%users)),
			forgetest.WithAPIBaseURL(conf.APIBaseURL(forgetest.CloudID)),
			forgetest.WithTimes(time.Now(), time.Now().Add(time.Hour))), userToks[i%users]}
	}
	body := []byte(`{}`)
	do := func(c call) int {
		req := httptest.NewRequest(http.MethodPost, "/resolvers/chat", bytes.NewReader(body))
		req.Header.Set("Authorization", c.fit)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-forge-oauth-system", appTok)
		req.Header.Set("x-forge-oauth-user", c.user)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		return w.Code
	}
	for i := range users { // warm every user
		if c := do(calls[i]); c != http.StatusOK {
			b.Fatalf("warm-up: %d", c)
		}
	}
	checks, admin := len(conf.ContentChecks()), wv.AdminCalls()
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if c := do(calls[int(n.Add(1))%pool]); c != http.StatusOK {
				b.Errorf("status %d", c)
				return
			}
		}
	})
	b.StopTimer()
	if d, w := len(conf.ContentChecks())-checks, wv.AdminCalls()-admin; d != 0 || w != 0 {
		b.Fatalf("warm opens made %d Confluence and %d Weavy calls", d, w)
	}
}
