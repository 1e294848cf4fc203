//go:build slow

package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// TestRedisMemoryPerRecord measures what Redis holds per cached user (its
// Weavy token and profile-sync record) and per installation (app token,
// installation record, lifecycle mark), for the README's sizing guidance.
func TestRedisMemoryPerRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement only")
	}
	f := startFleet(t, 1)
	r := f.replicas[0]
	rc := f.redis.Client()
	usedMemory := func() int64 {
		info, err := rc.InfoMap(t.Context(), "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(info["Memory"]["used_memory"], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// settled is used_memory once background work (jobs, client buffers)
	// has stopped moving it.
	settled := func() int64 {
		last := usedMemory()
		for range 5 {
			time.Sleep(100 * time.Millisecond)
			n := usedMemory()
			if n == last {
				break
			}
			last = n
		}
		return last
	}
	dbSize := func() int64 { return rc.DBSize(t.Context()).Val() }
	parallel := func(n int, do func(i int)) {
		var wg sync.WaitGroup
		work := make(chan int)
		for range 16 {
			wg.Go(func() {
				for i := range work {
					do(i)
				}
			})
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()
	}

	const users = 1000
	before, keys := settled(), dbSize()
	parallel(users, func(i int) {
		account := fmt.Sprintf("712020:%08x-5a6b-4c7d-8e9f-0a1b2c3d4e5f", i)
		if got := f.token(t, r, forgetest.InstallationID, account); got.Status != http.StatusOK {
			t.Errorf("token: %d %s", got.Status, got.Body)
		}
	})
	// Each first mint queues a profile sync that records the user.
	if !testwait.Poll(t, func() bool { return dbSize()-keys >= 2*users }) {
		t.Fatalf("%d keys after %d users, want %d more", dbSize(), users, 2*users)
	}
	perUser := float64(settled()-before) / users
	sample := func(pattern string) int64 {
		ks, _ := rc.Keys(t.Context(), pattern).Result()
		if len(ks) == 0 {
			return 0
		}
		return rc.MemoryUsage(t.Context(), ks[0]).Val()
	}
	t.Logf("per cached user: %.0f B of used_memory (%d users, %d keys); MEMORY USAGE of one weavy/u %d B, one scheduler/user %d B",
		perUser, users, dbSize()-keys, sample("*weavy/u/*"), sample("*scheduler/user/*"))

	const installations = 100
	before, keys = settled(), dbSize()
	installed := `{"eventType":"avi:forge:installed:app","app":{"id":"` + forgetest.AppID + `","version":"2.14.0"}}`
	parallel(installations, func(i int) {
		inst := installation(fmt.Sprintf("%08x-5e4f-4a3b-8c2d-1e0f9a8b7c6d", i))
		h := map[string]string{"x-forge-oauth-system": forgetest.MintAppToken(t, time.Now().Add(3*time.Hour))}
		if got := r.post(t, "/triggers/lifecycle", f.fit(t, inst, ""), h, installed); got.Status != http.StatusOK {
			t.Errorf("lifecycle: %d %s", got.Status, got.Body)
		}
		if got := r.post(t, "/triggers/scheduled", f.fit(t, inst, ""), h, `{}`); got.Status != http.StatusAccepted {
			t.Errorf("scheduled: %d %s", got.Status, got.Body)
		}
	})
	perInst := float64(settled()-before) / installations
	t.Logf("per installation: %.0f B of used_memory (%d installations, %d keys); MEMORY USAGE of one forge/apptoken %d B, one scheduler/installation %d B, one scheduler/event %d B",
		perInst, installations, dbSize()-keys, sample("*forge/apptoken/*"), sample("*scheduler/installation/*"), sample("*scheduler/event/*"))
}
