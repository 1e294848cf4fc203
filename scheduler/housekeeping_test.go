package scheduler

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/store"
)

// flakyKV fails Get of the keys under a prefix with a chosen error.
type flakyKV struct {
	store.KV
	mu     sync.Mutex
	prefix string
	err    error
}

func (f *flakyKV) failGets(prefix string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prefix, f.err = prefix, err
}

func (f *flakyKV) Get(ctx context.Context, key string) ([]byte, error) {
	f.mu.Lock()
	prefix, err := f.prefix, f.err
	f.mu.Unlock()
	if err != nil && strings.HasPrefix(key, prefix) {
		return nil, err
	}
	return f.KV.Get(ctx, key)
}

// An installation silent for a month whose app token cannot be read is purged
// only when that is because there is none to read (or none that opens), never
// for a store that is briefly unavailable.
func TestHousekeepingPurgesOnlyWhenTokenIsGone(t *testing.T) {
	for _, tt := range []struct {
		name   string
		err    error
		purged bool
	}{
		{"store unavailable", fmt.Errorf("%w: connection refused", store.ErrUnavailable), false},
		{"corrupt", errors.New("forge: decode app token record: bad json"), false},
		{"sealed under another key", fmt.Errorf("%w: authentication failed", store.ErrSealed), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var flaky *flakyKV
			e := newEnv(t, func(o *testOptions) {
				flaky = &flakyKV{KV: o.KV}
				o.KV = flaky
				o.AppTokens = forge.NewAppTokens(flaky, forge.AppTokensOptions{Now: o.Now})
				o.Products = nil // no profile sync: housekeeping alone
			})
			ui := "ari:cloud:ecosystem::installation/h-ui"
			alive := "ari:cloud:ecosystem::installation/h-alive"
			e.scheduled(t, ui, cloudA)
			e.scheduled(t, alive, cloudA)
			e.clock.Advance(31 * 24 * time.Hour)
			e.deliverToken(t, ui, cloudA, e.clock.Now().Add(3*time.Hour)) // a UI call: alive
			flaky.failGets("forge/apptoken/"+ui, tt.err)
			e.scheduled(t, alive, cloudA) // queues the housekeeping
			if got := len(e.logs.FilterMessage("housekeeping done").All()); tt.purged && got != 2 {
				t.Fatalf("housekeeping completed %d times, want 2", got)
			}
			kept := slices.Contains(e.keys(t), installationKey(ui))
			if kept == tt.purged {
				t.Fatalf("installation kept = %v, want %v; keys %q", kept, !tt.purged, e.keys(t))
			}
		})
	}
}

// The housekeeping sweep makes bolt drop the expired Weavy tokens and
// lifecycle marks nothing else reads, visiting a bounded number of records.
func TestHousekeepingSweepsExpired(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sweep.db")
	clock := func() *time.Time { t := start; return &t }()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return *clock }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); *clock = clock.Add(d) }
	kv, err := store.OpenBolt(path, now)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := store.NewSealed(kv, make([]byte, store.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, ttl time.Duration) {
		t.Helper()
		if err := sealed.Put(ctx, key, []byte("v"), ttl); err != nil {
			t.Fatal(err)
		}
	}
	var live, dead []string
	for _, prefix := range sweptPrefixes {
		for i := range 3 {
			live = append(live, fmt.Sprintf("%sa/%d", prefix, i))
			dead = append(dead, fmt.Sprintf("%sb/%d", prefix, i))
			put(live[len(live)-1], 100*time.Hour)
			put(dead[len(dead)-1], time.Hour)
		}
		// Beyond the limit below: a fourth live record stops the scan first.
		live = append(live, prefix+"c/live")
		put(prefix+"c/live", 100*time.Hour)
		put(prefix+"d/late", time.Hour)
	}
	advance(2 * time.Hour)

	s := testOptions{QueueOptions: QueueOptions{KV: sealed, Now: now}}.build()
	s.sweepLimit = 3
	if err := s.Scheduled(ctx, trigger("sweep")); err != nil {
		t.Fatal(err)
	}
	s.run.waitIdle()
	s.Close()
	if err := sealed.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened at the start, what is still on disk reads as live again.
	kv, err = store.OpenBolt(path, func() time.Time { return start })
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	var left []string
	for _, prefix := range sweptPrefixes {
		if err := kv.Scan(ctx, prefix, func(k string, _ []byte) error { left = append(left, k); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	want := slices.Clone(live)
	for _, prefix := range sweptPrefixes {
		want = append(want, prefix+"d/late")
	}
	slices.Sort(want)
	slices.Sort(left)
	if !slices.Equal(left, want) {
		t.Fatalf("on disk after the sweep:\n%q\nwant (expired gone, but those past the limit):\n%q", left, want)
	}
}
