// Package gctune keeps the garbage collector from running too often while the
// live heap is small.
//
// Go's heap goal is about the live heap times (1 + GOGC/100), and at least
// 4 MiB. A warm forge-remote holds a few MiB, so under load the default
// GOGC=100 means a collection every few milliseconds: each one costs a fixed
// amount (scanning the stacks of a couple of hundred connection goroutines)
// and shrinks stacks that the next RSA verification grows again. Measured
// under bench/load, that was about a tenth of the server's CPU per request.
//
// A Tuner sets GOGC after each collection so that the heap goal is at least
// a fixed minimum (a larger version of the runtime's own 4 MiB) and, beyond
// it, the live heap plus a set share of it ("above", a GOGC). With a
// minimum of 32 MiB and above=50, a server of a few hundred users collects
// rarely, and one holding 100,000 users (20 MiB live) has a heap goal of
// 32 MiB where GOGC=100 set 40: the garbage of a request is small next to
// what such a server holds, so more frequent collections cost it little
// (2-5% more CPU per request in the runs measured under bench/load) for
// 3-10 MiB less RSS. This is a simple form of the "GC tuner" that large Go
// fleets run.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// Tuner adjusts GOGC after every collection until Stop.
type Tuner struct {
	minGoal uint64
	above   int
	base    int

	mu      sync.Mutex
	stopped bool
	sample  []metrics.Sample

	runs atomic.Int64 // afterGC calls, stopped or not (tests wait on it)
}

// active is the running Tuner: GOGC is one per process, so while one runs
// another Start does nothing (tests start several servers in one process).
var (
	activeMu sync.Mutex
	active   *Tuner
)

// Start keeps the heap goal at minGoal bytes, or the live heap and above
// percent of it when that is more, from the next collection on. Stop puts
// back GOGC as it was; GOGC=off (a negative percent) is left alone.
func Start(minGoal uint64, above int) *Tuner {
	t := &Tuner{
		minGoal: minGoal,
		above:   max(above, 1),
		sample: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"},
			{Name: "/gc/scan/stack:bytes"},
			{Name: "/gc/scan/globals:bytes"},
		},
		stopped: true,
	}
	activeMu.Lock()
	defer activeMu.Unlock()
	if active != nil {
		return t // a Tuner that does nothing
	}
	// Read under the lock: a Tuner stopping meanwhile has restored its base
	// before it let go of active, so this is never its raised value.
	if t.base = Percent(); t.base < 0 {
		return t
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
	defer t.runs.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	live, scanned := v[0], v[0]+v[1]+v[2] // GOGC applies to the live heap, stacks and globals
	debug.SetGCPercent(PercentFor(live, scanned, t.minGoal, t.above))
	t.arm()
}

// PercentFor is the GOGC that makes the heap goal minGoal, or above when
// that gives more. The runtime's goal is the larger of live + scanned ×
// GOGC/100 (scanned: the live heap, goroutine stacks and globals) and 4 MiB ×
// GOGC/100.
func PercentFor(live, scanned, minGoal uint64, above int) int {
	if live >= minGoal {
		return above
	}
	p := min((minGoal-live)*100/max(scanned, 1), minGoal*100/heapMinimum)
	return max(above, int(p))
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
