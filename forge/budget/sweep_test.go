package budget

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store/memory"
)

// held is how many pools and pause views memory holds.
func (b *Budget) held() (pools, pauses int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pools), len(b.pauses)
}

// With a pool per site, memory follows the sites calling Confluence this
// hour: the pools of a past hour and the ended pauses go, this hour's pools
// and a running pause stay.
func TestSweepKeepsOnlyWhatHoldsSomething(t *testing.T) {
	now := time.Date(2026, 8, 12, 14, 5, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	b := New(Options{KV: memory.New(clock), Now: clock, PointsPerHour: 100_000, Pool: PoolSite})
	ctx := context.Background()
	site := func(i int) string {
		return fmt.Sprintf("https://api.atlassian.com/ex/confluence/%08d-1111-1111-1111-111111111111", i)
	}
	take := func(i int) {
		t.Helper()
		tk, err := b.Take(ctx, PageCheck, site(i), http.MethodGet, "/wiki/api/v2/pages/1")
		if err != nil {
			t.Fatal(err)
		}
		b.Done(ctx, tk, http.MethodGet, "/wiki/api/v2/pages/1", http.StatusOK, nil, []byte(`{}`))
	}
	for i := range 100 {
		take(i)
	}
	b.Pause(ctx, ScopeSite, Site(site(7)), now.Add(2*time.Hour), "test")
	if pools, pauses := b.held(); pools != 100 || pauses != 101 {
		t.Fatalf("after 100 sites: %d pools, %d pause views; want 100 and 101 (the app's and each site's)", pools, pauses)
	}

	// Later in the same hour: every pool still holds this hour's points.
	now = now.Add(50 * time.Minute)
	take(100)
	if pools, _ := b.held(); pools != 101 {
		t.Fatalf("within the hour: %d pools, want all 101 kept", pools)
	}

	// The next hour: the past hour's pools go, and the ended pauses; site
	// 7's pause runs on.
	now = now.Add(10 * time.Minute)
	take(200)
	pools, pauses := b.held()
	if pools != 1 {
		t.Errorf("in the next hour: %d pools, want only site 200's", pools)
	}
	if pauses != 3 {
		t.Errorf("in the next hour: %d pause views, want 3 (the app's and site 200's, handed out now, and site 7's running pause)", pauses)
	}
	if _, err := b.Take(ctx, PageCheck, site(7), http.MethodGet, "/wiki/api/v2/pages/1"); err == nil {
		t.Error("site 7's pause was forgotten with the sweep")
	}
}
