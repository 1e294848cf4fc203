package scheduler

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// The windows alone: a leading sync, one trailing sync for any number of
// asks, retries never at once, forget and close dropping what waits.
func TestFirstSyncWindows(t *testing.T) {
	var mu sync.Mutex
	var started []string
	timers := &fakeTimers{}
	f := newFirstSyncs(time.Minute, timers.after, func(inst string) {
		mu.Lock()
		started = append(started, inst)
		mu.Unlock()
	})
	took := func(want ...string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(started, want) {
			t.Fatalf("started %q, want %q", started, want)
		}
		started = nil
	}

	f.request("a")
	f.request("a")
	f.request("a")
	f.request("b")
	took("a", "b") // at once, once each
	timers.fire()
	took("a") // the asks within a's window; b's passed quietly
	timers.fire()
	took() // a's next window passed quietly
	f.request("a")
	took("a")

	f.retry("b") // deferred: not at once, at the window's end
	took()
	timers.fire()
	took("b")
	timers.fire()

	f.request("c")
	f.request("c")
	f.forget("c") // uninstalled: its waiting sync is dropped
	f.request("d")
	f.request("d")
	f.close()
	timers.fire()
	f.request("e")
	took("c", "d")
}
