package budget

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store/memory"
)

// BenchmarkSitePoolMemory reports the heap a site's pool and pause view
// take with PoolSite, together with its records in the memory store (with
// bolt or Redis those are out of the heap): what the budget holds per site
// calling Confluence within the hour (sweepLocked drops past hours).
func BenchmarkSitePoolMemory(b *testing.B) {
	const sites = 10_000
	ctx := context.Background()
	for b.Loop() {
		now := time.Date(2026, 8, 12, 14, 5, 0, 0, time.UTC)
		clock := func() time.Time { return now }
		bg := New(Options{KV: memory.New(clock), Now: clock, PointsPerHour: 100_000, Pool: PoolSite})
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range sites {
			s := fmt.Sprintf("https://api.atlassian.com/ex/confluence/%08d-1111-1111-1111-111111111111", i)
			tk, err := bg.Take(ctx, PageCheck, s, http.MethodGet, "/wiki/api/v2/pages/1")
			if err != nil {
				b.Fatal(err)
			}
			bg.Done(ctx, tk, http.MethodGet, "/wiki/api/v2/pages/1", http.StatusOK, nil, []byte(`{}`))
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		runtime.KeepAlive(bg)
		b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/sites, "B/site")
	}
}
