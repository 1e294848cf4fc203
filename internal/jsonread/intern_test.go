package jsonread

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func TestInterner(t *testing.T) {
	in := NewInterner()
	a := in.string([]byte("forge/invocation-token"))
	b := in.string([]byte("forge/invocation-token"))
	if a != "forge/invocation-token" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Fatalf("a repeated string is not shared: %q %q", a, b)
	}
	long := strings.Repeat("x", internMaxLen+1)
	if l1, l2 := in.string([]byte(long)), in.string([]byte(long)); l1 != long || unsafe.StringData(l1) == unsafe.StringData(l2) {
		t.Fatalf("a string over %d bytes was interned", internMaxLen)
	}
	var none *Interner
	if s := none.string([]byte("x")); s != "x" {
		t.Fatalf("nil Interner: %q", s)
	}
	// Far more strings than slots, so slots collide and get overwritten:
	// every answer must still be the bytes asked for.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 5 * internSlots {
				want := fmt.Sprintf("value-%d-%d", i%(2*internSlots), g%2)
				if got := in.string([]byte(want)); got != want {
					t.Errorf("got %q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
