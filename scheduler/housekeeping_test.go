package scheduler

import (
	"context"
	"errors"
	"fmt"
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
