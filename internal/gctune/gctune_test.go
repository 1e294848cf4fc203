package gctune

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/internal/testwait"
)

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		live, scanned, minGoal uint64
		above, want            int
	}{
		// Live 8 MiB, 9 MiB scanned: 8 + 9 × 2.66 = 32 MiB.
		{live: 8 * mib, scanned: 9 * mib, minGoal: 32 * mib, above: 50, want: 266},
		// Live 16 MiB: 16 + 17 × 0.94 = 32 MiB, the minimum still rules.
		{live: 16 * mib, scanned: 17 * mib, minGoal: 32 * mib, above: 50, want: 94},
		// Live 22 MiB: 22 × 1.5 is more than the minimum, above rules.
		{live: 22 * mib, scanned: 23 * mib, minGoal: 32 * mib, above: 50, want: 50},
		{live: 64 * mib, scanned: 65 * mib, minGoal: 32 * mib, above: 50, want: 50},
		{live: 8 * mib, scanned: 9 * mib, minGoal: 32 * mib, above: 300, want: 300},
		// A small heap: the runtime's 4 MiB minimum, scaled by GOGC, rules.
		{live: 1 * mib, scanned: 2 * mib, minGoal: 32 * mib, above: 50, want: 800},
		{live: 0, scanned: 0, minGoal: 32 * mib, above: 50, want: 800},
	} {
		if got := PercentFor(tt.live, tt.scanned, tt.minGoal, tt.above); got != tt.want {
			t.Errorf("PercentFor(%d, %d, %d, %d) = %d, want %d", tt.live, tt.scanned, tt.minGoal, tt.above, got, tt.want)
		}
	}
}

// TestTunerRaisesAndRestores runs the real thing: after a collection GOGC is
// raised for a small heap, and Stop puts the original back.
func TestTunerRaisesAndRestores(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)

	tu := Start(256<<20, 100) // far above this test binary's live heap
	collectUntil(t, func(p int) bool { return p > 100 })
	tu.Stop()
	if p := Percent(); p != 100 {
		t.Fatalf("GOGC after Stop = %d, want 100", p)
	}
	// The cleanup still armed runs after the next collection and must not
	// raise it again.
	afterNextGC(t, tu)
	if p := Percent(); p != 100 {
		t.Fatalf("GOGC after Stop and a collection = %d, want 100", p)
	}
}

func TestTunerLeavesGCOffAlone(t *testing.T) {
	orig := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(orig)
	tu := Start(32<<20, 100)
	activeMu.Lock()
	armed := active != nil
	activeMu.Unlock()
	if armed || !tu.stopped {
		t.Fatal("a Tuner started with GOGC off runs (and would arm a cleanup)")
	}
	runtime.GC()
	tu.Stop()
	if p := Percent(); p >= 0 {
		t.Fatalf("GOGC = %d, want off", p)
	}
}

func TestOneTunerAtATime(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	a := Start(256<<20, 100)
	b := Start(256<<20, 100) // does nothing while a runs
	afterNextGC(t, a)
	if p := Percent(); p <= 100 {
		t.Fatalf("GOGC = %d after a collection under a; want it raised", p)
	}
	b.Stop()
	a.Stop()
	if p := Percent(); p != 100 {
		t.Fatalf("GOGC after both stopped = %d, want 100", p)
	}
}

// TestStartWhileAnotherStops: a Tuner starting while another stops must not
// take the stopping one's raised GOGC as its floor (and restore it later).
// The test holds the lock a stopping Tuner needs, so that b's Start waits
// for it, then does a's Stop by hand.
func TestStartWhileAnotherStops(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	a := Start(256<<20, 100)
	debug.SetGCPercent(6400) // as a collection under a would have

	activeMu.Lock()
	started := make(chan *Tuner)
	go func() { started <- Start(256<<20, 100) }()
	testwait.For(t, "b's Start to wait for the lock", startWaitsForLock)
	a.mu.Lock() // a's Stop, with activeMu already held
	a.stopped = true
	debug.SetGCPercent(a.base)
	a.mu.Unlock()
	active = nil
	activeMu.Unlock()

	b := <-started
	b.Stop()
	if p := Percent(); p != 100 {
		t.Fatalf("GOGC after both stopped = %d, want 100", p)
	}
}

// TestTunerLowersForALargeHeap: a live heap past the minimum gets the above
// percent, below the GOGC the Tuner started with, and Stop restores that.
func TestTunerLowersForALargeHeap(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	hold := make([]byte, 8<<20) // live, and far above the minimum of 1 MiB
	tu := Start(1<<20, 50)
	collectUntil(t, func(p int) bool { return p == 50 })
	runtime.KeepAlive(hold)
	tu.Stop()
	if p := Percent(); p != 100 {
		t.Fatalf("GOGC after Stop = %d, want 100", p)
	}
}

// collectUntil runs collections until GOGC satisfies ok (cleanups run on
// their own goroutine, so each collection's may take a moment).
func collectUntil(t *testing.T, ok func(percent int) bool) {
	t.Helper()
	if !testwait.Poll(t, func() bool { runtime.GC(); return ok(Percent()) }) {
		t.Fatalf("GOGC still %d after collections", Percent())
	}
}

// afterNextGC runs collections until tu's cleanup has run after one of them.
func afterNextGC(t *testing.T, tu *Tuner) {
	t.Helper()
	n := tu.runs.Load()
	testwait.For(t, "the Tuner's cleanup after a collection", func() bool { runtime.GC(); return tu.runs.Load() > n })
}

// startWaitsForLock reports whether a goroutine is blocked on a mutex inside
// Start: the goroutine dump names its state ([sync.Mutex.Lock]) and frames.
func startWaitsForLock() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "[sync.Mutex.Lock") && strings.Contains(g, "gctune.Start(") {
			return true
		}
	}
	return false
}
