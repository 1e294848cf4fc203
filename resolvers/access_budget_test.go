package resolvers_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/store/memory"
)

const (
	cloudA = "11111111-1111-1111-1111-111111111111"
	cloudB = "22222222-2222-2222-2222-222222222222"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// replicas are two page checkers, each with its own client and budget, over
// one store: the fleet.
func replicas(t *testing.T, clk *testClock) (*confluencesim.Server, []*resolvers.Access) {
	sim := confluencesim.New(nil, confluencesim.Options{AnyContent: true, AnyUser: true, Now: clk.Now})
	t.Cleanup(sim.Close)
	kv := memory.New(clk.Now)
	var out []*resolvers.Access
	for range 2 {
		b := budget.New(budget.Options{KV: kv, Now: clk.Now, Reserve: 0.3})
		c := forge.NewClient(nil, forge.ClientOptions{Now: clk.Now, Budget: b})
		out = append(out, resolvers.NewAccess(c, resolvers.AccessOptions{}))
	}
	return sim, out
}

func check(a *resolvers.Access, sim *confluencesim.Server, cloudID, token string) (bool, error) {
	return a.Check(sim.APIBaseURL(cloudID), token, chat.Target{Kind: chat.KindPage, ID: "98305"}, "page")(context.Background())
}

// A 429 naming the global pool silences every replica for Retry-After:
// their page checks answer confluence_busy (429 with the wait left) at once,
// without calling Confluence; a tenant-based 429 silences only its site.
func TestQuota429PausesEveryReplica(t *testing.T) {
	for _, tc := range []struct {
		reason      string
		otherPaused bool
	}{
		{"confluence-quota-global-based", true},
		{"confluence-quota-tenant-based", false},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			clk := &testClock{t: time.Date(2026, 8, 12, 14, 5, 0, 0, time.UTC)}
			sim, fleet := replicas(t, clk)
			tok := sim.IssueUserToken("557058:user", clk.Now().Add(time.Hour))
			for _, a := range fleet {
				if ok, err := check(a, sim, cloudA, tok); !ok || err != nil {
					t.Fatalf("warm-up check: %v %v", ok, err)
				}
			}
			sim.FailNextWithHeaders(1, http.StatusTooManyRequests, http.Header{
				"Retry-After": {"120"}, "Ratelimit-Reason": {tc.reason},
			})
			_, err := check(fleet[0], sim, cloudA, tok)
			var ce *resolvers.ConfluenceError
			if !errors.As(err, &ce) || !ce.Busy() || ce.RetryAfter != 120*time.Second {
				t.Fatalf("the throttled check: %v, want busy for 120s", err)
			}
			clk.Add(time.Second) // every replica has read the pause by now
			calls := sim.Calls()
			for i, a := range fleet {
				_, err := check(a, sim, cloudA, tok)
				if !errors.As(err, &ce) || !ce.Busy() || ce.RetryAfter != 119*time.Second {
					t.Fatalf("replica %d during the pause: %v, want busy for 119s", i+1, err)
				}
				_, err = check(a, sim, cloudB, tok)
				if tc.otherPaused != (err != nil) {
					t.Fatalf("replica %d, another site: %v (paused: %v)", i+1, err, tc.otherPaused)
				}
			}
			want := calls
			if !tc.otherPaused {
				want += 2
			}
			if got := sim.Calls(); got != want {
				t.Fatalf("Confluence was called %d times during the pause, want %d", got-calls, want-calls)
			}
			clk.Add(2 * time.Minute)
			for _, a := range fleet {
				if ok, err := check(a, sim, cloudA, tok); !ok || err != nil {
					t.Fatalf("after the pause: %v %v", ok, err)
				}
			}
		})
	}
}
