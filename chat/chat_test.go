package chat

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/store/open"
	"github.com/forge-remote/forge-remote/weavy"
)

var _ Weavy = (*weavy.Client)(nil)
var _ Lister = (*weavy.Client)(nil)

const cloud = "b7e5c1d4-2f3a-4e6b-9c8d-7a6f5e4d3c2b"

func TestAppUIDRoundTrip(t *testing.T) {
	for _, tt := range []Target{{KindPage, "98305"}, {KindSpace, "~712020_ab-c"}, {KindSpaceID, "65537"}, {Kind: KindSite}} {
		uid := AppUID(cloud, tt)
		c, got, ok := parseAppUID(uid)
		if !ok || c != cloud || got != tt || tt.check() != nil {
			t.Errorf("%+v → %q → %v %+v %v", tt, uid, c, got, ok)
		}
	}
	for _, uid := range []string{"confluence-page-1", "confluence-nope-page-1", "other-" + cloud + "-page-1", "confluence-" + cloud + "-blog-1"} {
		if _, _, ok := parseAppUID(uid); ok {
			t.Errorf("%q parsed", uid)
		}
	}
	for _, bad := range []Target{{KindPage, ""}, {KindPage, "1 2"}, {KindPage, "12a"}, {KindSpace, "A B"}, {KindSpace, "a/b"}, {'x', "1"}} {
		if bad.check() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestLeaseRecord(t *testing.T) {
	l := lease{State: stateActive, Renewed: time.Unix(0, 1_700_000_000_123_456_789), AppID: 1001, AppUID: AppUID(cloud, Target{KindPage, "1"}), User: "712020:abc"}
	got, ok := decodeLease(l.encode())
	if !ok || got != l {
		t.Fatalf("round trip: %+v %v", got, ok)
	}
	for _, bad := range [][]byte{nil, {9}, l.encode()[:17], append([]byte{4}, l.encode()[1:]...)} {
		if _, ok := decodeLease(bad); ok {
			t.Errorf("%x decoded", bad)
		}
	}
	if l.expired(l.Renewed.Add(time.Hour), 2*time.Hour) || !l.expired(l.Renewed.Add(2*time.Hour), 2*time.Hour) {
		t.Error("expiry")
	}
}

// The warm path: a membership renewed within a quarter of the lease costs
// no store and no Weavy call.
func BenchmarkOpenWarm(b *testing.B) {
	wv := weavysim.New("")
	defer wv.Close()
	c, err := weavy.NewClient(wv.URL, weavysim.APIKey, weavy.ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	kv, err := open.Store(context.Background(), open.Options{URL: "memory://"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = kv.Close() })
	s := New(c, kv, Options{Recheck: DefaultRecheck})
	var checks atomic.Int64
	r := Request{InstallationID: "ari:cloud:ecosystem::installation/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
		CloudID: cloud, User: "712020:1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", Target: Target{KindPage, "98305"},
		Check: func(context.Context) (bool, error) { checks.Add(1); return true, nil }}
	if _, err := s.Open(context.Background(), r); err != nil {
		b.Fatal(err)
	}
	calls := wv.AdminCalls()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Open(context.Background(), r); err != nil {
				b.Fatal(err)
			}
		}
	})
	if wv.AdminCalls() != calls || checks.Load() != 1 {
		b.Fatalf("warm opens called Weavy or Confluence")
	}
}

// What one entry of each map costs in memory (memory.go), map slots
// included, with ids of real length: 100,000 entries each, through the puts
// the service makes. Keys hold no strings, so none are retained.
func BenchmarkEntryMemory(b *testing.B) {
	const n = 100_000
	instOf := func(i int) string {
		return "ari:cloud:ecosystem::installation/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b" + fmt.Sprintf("%04d", i%10_000)
	}
	userOf := func(i int) string { return "712020:1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c" + fmt.Sprintf("%06d", i) }
	cloudOf := func(i int) string { return "b7e5c1d4-2f3a-4e6b-9c8d-7a6f5e" + fmt.Sprintf("%06d", i) }
	for _, m := range []struct {
		name string
		fill func(s *Service, i int, now int64)
	}{
		{"members", func(s *Service, i int, now int64) {
			k := s.keys.member(instOf(i), cloud, Target{KindPage, strconv.Itoa(98305 + i)}, userOf(i))
			s.putLocked(k, memberEntry{appID: int64(i + 1), renewed: now, checked: now, allowed: true, inst: s.keys.tag(instOf(i))}, now)
		}},
		{"apps", func(s *Service, i int, _ int64) {
			putBounded(s.apps, s.maxApps, s.keys.app(instOf(i), cloud, Target{KindPage, strconv.Itoa(98305 + i)}),
				appEntry{id: int64(i + 1), inst: s.keys.tag(instOf(i))}, nil)
		}},
		{"inDir", func(s *Service, i int, _ int64) {
			putBounded(s.inDir, s.maxUsers, s.keys.user(instOf(i), userOf(i)), s.keys.tag(instOf(i)), nil)
		}},
		{"sites", func(s *Service, i int, _ int64) {
			putBounded(s.sites, s.maxSites, s.keys.site(instOf(i)+strconv.Itoa(i)), s.keys.siteCloud(cloudOf(i)), nil)
		}},
		{"dirs", func(s *Service, i int, _ int64) {
			putBounded(s.dirs, s.maxSites, s.keys.dir(cloudOf(i)), struct{}{}, nil)
		}},
	} {
		b.Run(m.name, func(b *testing.B) {
			s := New(nil, nil, Options{Recheck: DefaultRecheck, MaxEntries: n, MaxApps: n, MaxUsers: n, MaxSites: n})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			now := time.Now().UnixNano()
			s.mu.Lock()
			for i := range n {
				m.fill(s, i, now)
			}
			s.mu.Unlock()
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/entry")
			runtime.KeepAlive(s)
			for range b.N {
			}
		})
	}
}

// The key of a warm open: a salted SHA-256 of three blocks with ids of real
// length.
func BenchmarkMemberKey(b *testing.B) {
	k := newKeyer()
	t := Target{KindPage, "98305"}
	var x memKey
	for range b.N {
		x = k.member(inst, cloud, t, alice)
	}
	_ = x
}
