package redis

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store/redistest"
)

// inLexRange is ZRANGEBYLEX's test of member against the bounds lo and hi.
func inLexRange(member, lo, hi string) bool {
	switch {
	case lo == "-":
	case lo[0] == '[' && member < lo[1:], lo[0] == '(' && member <= lo[1:]:
		return false
	}
	switch {
	case hi == "+":
		return true
	case hi[0] == '[':
		return member <= hi[1:]
	default:
		return member < hi[1:]
	}
}

// lexRange's bounds hold exactly the members that start with the prefix,
// bytes 0x80-0xff and U+FFFD included (a rune-wise trim took any byte that
// is no UTF-8 for 0xff); for the empty prefix, every key but those with a
// leading NUL (the marker, a build's sentinel).
func TestLexRange(t *testing.T) {
	alphabet := []string{"\x00", "\x01", "a", "\x7f", "\x80", "\xef", "\xbf", "\xbd", "\xfe", "\xff"}
	strs := []string{""}
	for range 3 {
		for _, s := range slices.Clone(strs) {
			for _, c := range alphabet {
				if len(s) < 3 && !slices.Contains(strs, s+c) {
					strs = append(strs, s+c)
				}
			}
		}
	}
	strs = append(strs, "\uFFFD", "a\uFFFD", "a\uFFFDb")
	for _, prefix := range strs {
		lo, hi := lexRange(prefix)
		for _, member := range strs {
			want := strings.HasPrefix(member, prefix) && member != "" && !(prefix == "" && member[0] == 0)
			if got := inLexRange(member, lo, hi); got != want {
				t.Fatalf("prefix %q: member %q in [%q, %q] = %v; want %v", prefix, member, lo, hi, got, want)
			}
		}
	}
}

// An index lost between the build's walk and its marking (evicted, or a
// Redis restarted from a snapshot older than the build) lost members of keys
// the walk had passed: the build must not mark it, or Scan would trust an
// index that misses live records.
func TestReindexIndexLostDuringTheBuild(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	rc := srv.Client()
	r, err := Open(ctx, srv.URL(), Options{Prefix: "b:", ReindexEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	for _, k := range []string{"k/1", "k/2", "k/3"} {
		if err := r.Put(ctx, k, []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	afterWalk = func() { rc.Del(ctx, "b:"+IndexName) }
	t.Cleanup(func() { afterWalk = nil })
	if _, _, err := r.Reindex(ctx); err == nil {
		t.Fatal("Reindex succeeded although the index was lost during its walk")
	}
	if rc.ZScore(ctx, "b:"+IndexName, "").Err() == nil {
		t.Fatal("the index is marked after a build that lost it")
	}
	scan := func() []string {
		var keys []string
		if err := r.Scan(ctx, "k/", func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
			t.Fatal(err)
		}
		slices.Sort(keys)
		return keys
	}
	if got := scan(); len(got) != 3 {
		t.Fatalf("Scan after the failed build = %q; want the 3 records", got)
	}
	afterWalk = nil
	if _, _, err := r.Reindex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := scan(); len(got) != 3 {
		t.Fatalf("Scan after the build = %q; want the 3 records", got)
	}
	members := rc.ZRange(ctx, "b:"+IndexName, 0, -1).Val()
	if !slices.Equal(members, []string{"", "k/1", "k/2", "k/3"}) {
		t.Errorf("index = %q; want the marker and the 3 keys, no sentinel", members)
	}
}

// After its look, the repair loop waits: about its period when all is done,
// a minute after a failure, and no longer than a claim can live when
// another replica's build runs (it may die building).
func TestNextRepair(t *testing.T) {
	r := &Store{every: time.Hour}
	for range 100 {
		if d := r.nextRepair(false, nil); d < time.Hour || d > time.Hour+6*time.Minute {
			t.Fatalf("after a repair: %v; want an hour and a tenth at most", d)
		}
		if d := r.nextRepair(true, nil); d > reindexLease+time.Second {
			t.Fatalf("with another build running: %v; want at most the claim's %v", d, reindexLease)
		}
		if d := r.nextRepair(false, errors.New("down")); d != time.Minute {
			t.Fatalf("after a failure: %v; want a minute", d)
		}
	}
}
