// Package testwait is how tests wait for something that happens on another
// goroutine or process: for as long as go test itself allows, never less.
package testwait

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// A wait gives up this long before go test's -timeout would end the binary
// (at most a tenth of what is left), so that a failure names what was awaited
// instead of being a goroutine dump.
const margin = 30 * time.Second

// poll is the interval between two checks of a condition.
const poll = 20 * time.Millisecond

// Deadline is when a wait in t gives up: shortly before go test's own
// deadline, or never (the zero time) when there is none (-timeout 0). A wait
// must not end earlier: on a slow or busy machine anything may take long,
// and only go test's -timeout says how long is too long.
func Deadline(t testing.TB) time.Time {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			return beforeEnd(dl)
		}
		return time.Time{}
	}
	return binaryDeadline()
}

// start approximates when go test's alarm started: this package is
// initialised as the test binary starts.
var start = time.Now()

// binaryDeadline is the deadline from -test.timeout, for what has no
// testing.T deadline (benchmarks, fuzz targets, TestMain).
func binaryDeadline() time.Time {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return time.Time{}
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return time.Time{}
	}
	d, _ := g.Get().(time.Duration)
	if d <= 0 {
		return time.Time{}
	}
	return beforeEnd(start.Add(d))
}

func beforeEnd(end time.Time) time.Time {
	return end.Add(-min(margin, time.Until(end)/10))
}

// After is a channel that fires at Deadline(t) (never, without a deadline),
// for a select that waits on something else.
func After(t testing.TB) <-chan time.Time {
	dl := Deadline(t)
	if dl.IsZero() {
		return nil
	}
	timer := time.NewTimer(time.Until(dl))
	t.Cleanup(func() { timer.Stop() })
	return timer.C
}

// Poll checks cond until it holds and reports true, or false once Deadline(t)
// has passed.
func Poll(t testing.TB, cond func() bool) bool {
	dl := Deadline(t)
	for {
		if cond() {
			return true
		}
		if !dl.IsZero() && time.Now().After(dl) {
			return false
		}
		time.Sleep(poll)
	}
}

// For is Poll that fails t, saying what never happened.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Poll(t, cond) {
		t.Fatalf("gave up waiting for %s", what)
	}
}

// Recv waits for a value on ch, failing t, saying what never came.
func Recv[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-After(t):
		t.Fatalf("gave up waiting for %s", what)
		var zero T
		return zero
	}
}

// NoLeaks waits until no goroutine is left but those opts ignore, then lets
// goleak report (and fail t) if some still are. goleak's own retries last
// under half a second, less than a busy machine may need to end a goroutine.
func NoLeaks(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	Poll(t, func() bool { return goleak.Find(opts...) == nil })
	goleak.VerifyNone(t, opts...)
}

// VerifyTestMain is goleak.VerifyTestMain with NoLeaks' patience: after the
// tests ran, it waits for their goroutines to end before reporting any.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		dl := binaryDeadline()
		for goleak.Find(opts...) != nil && (dl.IsZero() || time.Now().Before(dl)) {
			time.Sleep(poll)
		}
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
