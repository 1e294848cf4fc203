package weavy

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store"
)

func TestStoreKey(t *testing.T) {
	const u = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
	// The hash of a uid is fixed: a change would orphan every stored token.
	if got := uidSegment("712020:5b10ac8d"); got != "vlAhMnkzrb376T2h38kNTA" {
		t.Fatalf("uidSegment changed: %q", got)
	}
	a := uidSegment("a")
	for _, tt := range []struct {
		inst, uid, want string
	}{
		{"ari:cloud:ecosystem::installation/" + u, "712020:5b10ac8d", "weavy/u/" + u + "/vlAhMnkzrb376T2h38kNTA"},
		{"ari:cloud:ecosystem::installation/" + strings.ToUpper(u), "a", "weavy/u/" + strings.ToUpper(u) + "/" + a},
		// Anything but an installation ARI with a UUID keeps its whole id, escaped.
		{u, "a", "weavy/u/~" + u + "/" + a},
		{"ari:cloud:ecosystem::installation/1c2d", "a", "weavy/u/~ari:cloud:ecosystem::installation%2F1c2d/" + a},
		{"ari:cloud:ecosystem::installation/" + u + "/x", "a", "weavy/u/~ari:cloud:ecosystem::installation%2F" + u + "%2Fx/" + a},
		{"~" + u, "a/b", "weavy/u/~~" + u + "/" + uidSegment("a/b")},
	} {
		if got := storeKey(userKey{tt.inst, tt.uid}); got != tt.want {
			t.Errorf("storeKey(%q, %q) = %q, want %q", tt.inst, tt.uid, got, tt.want)
		}
		if got := storeKey(userKey{tt.inst, tt.uid}); !strings.HasPrefix(got, installationPrefix(tt.inst)) {
			t.Errorf("storeKey(%q, %q) = %q is not under %q", tt.inst, tt.uid, got, installationPrefix(tt.inst))
		}
	}
	if k := storeKey(userKey{"ari:cloud:ecosystem::installation/" + u, "712020:5b10ac8d-82e0-4b22-8c7d-1e0f9a8b7c6d"}); len(k) != 67 {
		t.Errorf("key of an accountId: %d bytes (%q), want 67", len(k), k)
	}
	if uidSegment("a") == uidSegment("b") || uidSegment("") == uidSegment("a") {
		t.Error("uids share a segment")
	}
	// One to one: no installation's prefix starts another's.
	insts := []string{u, "~" + u, "ari:cloud:ecosystem::installation/" + u, "ari:cloud:ecosystem::installation/" + u + "/x",
		"ari:cloud:ecosystem::installation/" + strings.ToUpper(u), inst1, inst2}
	for _, a := range insts {
		for _, b := range insts {
			if a != b && strings.HasPrefix(installationPrefix(a), installationPrefix(b)) {
				t.Errorf("prefix of %q %q starts with the prefix of %q %q", a, installationPrefix(a), b, installationPrefix(b))
			}
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	exp := time.Date(2026, 11, 22, 21, 0, 0, 123456789, time.UTC)
	for _, refreshed := range []bool{false, true} {
		e := newEntry(Token{AccessToken: "wyu_abc", ExpiresAt: exp}, exp.Add(-time.Hour-time.Nanosecond), time.Minute, refreshed)
		data := encodeRecord(e)
		if strings.Contains(string(data), "{") || len(data) > 2+8+7+len("wyu_abc") {
			t.Errorf("record %q: want the binary form", data)
		}
		tok, minted, r, ok := decodeRecord(data)
		if !ok || tok.AccessToken != "wyu_abc" || !tok.ExpiresAt.Equal(exp) || !minted.Equal(exp.Add(-time.Hour-time.Nanosecond)) || r != refreshed {
			t.Errorf("decodeRecord(encodeRecord) = %v %v %v %v", tok, minted, r, ok)
		}
	}
	good := encodeRecord(newEntry(Token{AccessToken: "wyu_abc", ExpiresAt: exp}, exp.Add(-time.Hour), time.Minute, false))
	for name, data := range map[string][]byte{
		"empty":        nil,
		"json":         []byte(`{"token":"wyu_abc","expires_at":"2026-11-22T21:00:00Z","minted_at":"2026-11-22T20:00:00Z"}`),
		"unknown form": append([]byte{2}, good[1:]...),
		"bad flags":    append([]byte{recordV1, 2}, good[2:]...),
		"truncated":    good[:9],
		"bad varint":   append(append([]byte(nil), good[:10]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		"minted after expiry": append(binary.AppendVarint(append([]byte(nil), good[:10]...), -int64(time.Minute)),
			"wyu_abc"...),
	} {
		if _, _, _, ok := decodeRecord(data); ok {
			t.Errorf("%s: decodeRecord(%q) ok", name, data)
		}
	}
}

func TestNanosClamps(t *testing.T) {
	if nanos(time.Time{}) != minNanos || nanos(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)) != maxNanos {
		t.Fatal("times out of range not clamped")
	}
	// A token "expiring" in year 3000 is still served, and its record reads back.
	e := newEntry(Token{AccessToken: "wyu_x", ExpiresAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}, time.Now(), time.Minute, false)
	if e.serveUntil <= time.Now().UnixNano() || e.keepUntil(time.Minute) <= e.serveUntil {
		t.Fatalf("entry %+v", e)
	}
	if _, _, _, ok := decodeRecord(encodeRecord(e)); !ok {
		t.Fatal("clamped record does not read back")
	}
}

// BenchmarkBrokerMemory reports the heap a cached user costs (B/user).
func BenchmarkBrokerMemory(b *testing.B) {
	const users = 20000
	var n atomic.Int64
	minter := minterFunc(func(_ context.Context, _ string, ttl time.Duration) (Token, error) {
		return Token{AccessToken: fmt.Sprintf("wyu_%d_%d", time.Now().UnixNano(), n.Add(1)), ExpiresAt: time.Now().Add(ttl)}, nil
	})
	ids := benchUsers(users)
	ctx := context.Background()
	var per float64
	for b.Loop() {
		b.StopTimer()
		kv := &countingKV{}
		before := heapLive()
		br := NewBroker(minter, kv, BrokerOptions{})
		b.StartTimer()
		for _, k := range ids {
			// Each call decodes its own ids, as a request does.
			if _, err := br.Token(ctx, strings.Clone(k.inst), strings.Clone(k.uid), false); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		per = float64(heapLive()-before) / users
		runtime.KeepAlive(br)
		b.StartTimer()
	}
	b.ReportMetric(per, "B/user")
}

func heapLive() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// countingKV stores nothing, so that BenchmarkBrokerMemory weighs the
// Broker alone.
type countingKV struct{ memKV }

func (c *countingKV) Get(context.Context, string) ([]byte, error) { return nil, store.ErrNotFound }
func (c *countingKV) Put(context.Context, string, []byte, time.Duration) error {
	return nil
}

// FuzzDecodeRecord: whatever the store hands back, decoding never panics, and
// what reads as a record writes back to the same token and times.
func FuzzDecodeRecord(f *testing.F) {
	exp := time.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC)
	f.Add(encodeRecord(newEntry(Token{AccessToken: "wyu_abc", ExpiresAt: exp}, exp.Add(-time.Hour), time.Minute, true)))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, minted, refreshed, ok := decodeRecord(data)
		if !ok {
			return
		}
		e := newEntry(tok, minted, time.Minute, refreshed)
		tok2, minted2, refreshed2, ok := decodeRecord(encodeRecord(e))
		if !ok || tok2.AccessToken != tok.AccessToken || refreshed2 != refreshed ||
			nanos(tok2.ExpiresAt) != e.exp || nanos(minted2) != e.minted {
			t.Fatalf("%q: re-encoded record reads %v %v %v %v", data, tok2, minted2, refreshed2, ok)
		}
	})
}
