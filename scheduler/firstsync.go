package scheduler

import (
	"sync"
	"time"
)

// afterFunc calls f in its own goroutine after d, unless the returned stop
// is called first; time.AfterFunc by default, a fake in tests.
type afterFunc func(d time.Duration, f func()) (stop func() bool)

func realAfter(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// firstSyncs paces the profile syncs that first tokens ask for, per
// installation on this replica: the first ask in a quiet installation starts
// a sync at once and opens a window; asks within the window are answered by
// one more sync when it ends (which opens the next window), so a burst of new
// users costs one bulk read per window rather than one per user. Only
// installations with a window open are held in memory.
type firstSyncs struct {
	window time.Duration
	after  afterFunc
	start  func(inst string) // queues the installation's first-sync job

	mu     sync.Mutex
	open   map[string]*syncWindow
	closed bool
}

type syncWindow struct {
	stop  func() bool
	again bool // asked for within the window: sync when it ends
}

func newFirstSyncs(window time.Duration, after afterFunc, start func(string)) *firstSyncs {
	return &firstSyncs{window: window, after: after, start: start, open: make(map[string]*syncWindow)}
}

// request asks for a first sync of the installation's due users: now when
// no window is open, else when the open one ends.
func (f *firstSyncs) request(inst string) {
	if f.ask(inst, true) {
		f.start(inst)
	}
}

// retry asks for a sync when the installation's window ends (one is opened
// if none is): for a sync the budget deferred, never at once.
func (f *firstSyncs) retry(inst string) { f.ask(inst, false) }

// ask records the ask and reports whether the caller starts a sync now.
func (f *firstSyncs) ask(inst string, now bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	if w := f.open[inst]; w != nil {
		w.again = true
		return false
	}
	f.openLocked(inst, !now)
	return now
}

func (f *firstSyncs) openLocked(inst string, again bool) {
	w := &syncWindow{again: again}
	f.open[inst] = w
	w.stop = f.after(f.window, func() { f.end(inst, w) })
}

// end closes w: with asks made within it, it starts their sync and opens
// the next window.
func (f *firstSyncs) end(inst string, w *syncWindow) {
	f.mu.Lock()
	if f.closed || f.open[inst] != w {
		f.mu.Unlock()
		return // forgotten, or closed, meanwhile
	}
	delete(f.open, inst)
	again := w.again
	if again {
		f.openLocked(inst, false)
	}
	f.mu.Unlock()
	if again {
		f.start(inst)
	}
}

// forget drops the installation's window, and the sync it would start.
func (f *firstSyncs) forget(inst string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w := f.open[inst]; w != nil {
		w.stop()
		delete(f.open, inst)
	}
}

// close drops every window; later asks do nothing.
func (f *firstSyncs) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for inst, w := range f.open {
		w.stop()
		delete(f.open, inst)
	}
}
