package weavy

import (
	"testing"
	"time"
)

// The limiter holds only users who refreshed lately, and forgets an
// installation's users with it.
func TestRefreshLimiterForgets(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	l := newRefreshLimiter(6, time.Minute, start)
	a, b, c := userKey{inst1, alice}, userKey{inst1, bob}, userKey{inst2, alice}
	for _, k := range []userKey{a, b, c} {
		if _, _, ok := l.allow(k, start); !ok {
			t.Fatalf("first refresh of %v refused", k)
		}
	}
	if _, _, ok := l.allow(a, start.Add(5*time.Second)); ok {
		t.Fatal("a second refresh 5 s later allowed")
	}
	l.forget(inst1)
	if len(l.users) != 1 || l.users[c] == nil {
		t.Fatalf("after forgetting %s: %v", inst1, l.users)
	}
	// A minute on, the next call drops the limits that have run out.
	if _, _, ok := l.allow(a, start.Add(time.Minute)); !ok {
		t.Fatal("refresh a minute later refused")
	}
	if len(l.users) != 1 || l.users[a] == nil {
		t.Fatalf("after the sweep: %v", l.users)
	}
}
