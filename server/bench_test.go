package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

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
