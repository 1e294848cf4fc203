// Package gctune keeps the garbage collector from running too often while the
// live heap is small.
//
// Go's heap goal is about the live heap times (1 + GOGC/100). A warm forge-remote
// holds a few MiB, so under load the default GOGC=100 means a collection every
// few milliseconds: each one costs a fixed amount (scanning the stacks of a
// couple of hundred connection goroutines) and shrinks stacks that the next
// RSA verification grows again. Measured under bench/load, that was about a
// tenth of the server's CPU per request.
//
// A Tuner raises GOGC after each collection so that the goal is at least the
// live heap plus a fixed headroom, and never lowers it below the GOGC it
// started with. With a large live heap (100,000 cached users) the headroom is
// smaller than what GOGC already allows and nothing changes; memory grows by at
// most the headroom. This is the "GC tuner" that large Go fleets run.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Tuner adjusts GOGC after every collection until Stop.
type Tuner struct {
	headroom uint64
	base     int

	mu      sync.Mutex
	stopped bool
	sample  []metrics.Sample
}

// active is the running Tuner: GOGC is one per process, so while one runs
// another Start does nothing (tests start several servers in one process).
var (
	activeMu sync.Mutex
	active   *Tuner
)

// Start makes the heap goal at least live + headroom bytes from the next
// collection on. GOGC as it is now (the environment's, or 100) is the floor;
// GOGC=off (a negative percent) is left alone.
func Start(headroom uint64) *Tuner {
	t := &Tuner{
		headroom: headroom,
		base:     Percent(),
		sample: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"},
			{Name: "/gc/scan/stack:bytes"},
			{Name: "/gc/scan/globals:bytes"},
		},
		stopped: true,
	}
	activeMu.Lock()
	defer activeMu.Unlock()
	if t.base < 0 || active != nil {
		return t // a Tuner that does nothing
	}
	t.stopped = false
	active = t
	t.arm()
	return t
}

// sentinel is garbage from birth: its cleanup runs after the collection that
// finds it unreachable. It is big enough to stay out of the tiny allocator,
// whose objects may never be cleaned up.
type sentinel struct {
	_ [32]byte
	_ *int
}

func (t *Tuner) arm() {
	runtime.AddCleanup(new(sentinel), (*Tuner).afterGC, t)
}

func (t *Tuner) afterGC() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	metrics.Read(t.sample)
	var scanned uint64 // what GOGC multiplies: the live heap, stacks and globals
	for _, s := range t.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			scanned += s.Value.Uint64()
		}
	}
	debug.SetGCPercent(PercentFor(scanned, t.headroom, t.base))
	t.arm()
}

// PercentFor is the GOGC that makes the heap goal the live heap plus
// headroom, never below base. The runtime's goal is the live heap plus GOGC
// percent of scanned (the live heap, goroutine stacks and globals), and at
// least a minimum of 4 MiB that GOGC scales too.
func PercentFor(scanned, headroom uint64, base int) int {
	return max(base, int(headroom*100/max(scanned, heapMinimum)))
}

// heapMinimum is the runtime's least heap goal at GOGC=100.
const heapMinimum = 4 << 20

// Stop restores the GOGC the Tuner started with.
func (t *Tuner) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.stopped = true
	debug.SetGCPercent(t.base)
	activeMu.Lock()
	active = nil
	activeMu.Unlock()
}

// Percent is the current GOGC (negative: off).
func Percent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}
