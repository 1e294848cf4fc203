package chat

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/store"
)

// writeCounter is a store that records the keys written (Put, and Update
// whose function does not keep the record as it is).
type writeCounter struct {
	store.KV
	mu     sync.Mutex
	writes []string
}

func (w *writeCounter) Put(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	w.record(key)
	return w.KV.Put(ctx, key, v, ttl)
}

func (w *writeCounter) Update(ctx context.Context, key string, fn store.UpdateFunc) error {
	return w.KV.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		v, ttl, err := fn(old, exists)
		if err == nil {
			w.record(key)
		}
		return v, ttl, err
	})
}

func (w *writeCounter) record(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, key)
}

// since lists the keys written from the n-th write on, but the leases.
func (w *writeCounter) since(n int) (keys []string, total int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range w.writes[n:] {
		if !strings.HasPrefix(k, leasePrefix) {
			keys = append(keys, k)
		}
	}
	return keys, len(w.writes)
}

type memFixture struct {
	s     *Service
	wv    *weavysim.Server
	kv    *writeCounter
	clock *clock
}

func newMemFixture(t *testing.T, o Options) *memFixture {
	t.Helper()
	wv, c, kv := newWeavyAndStore(t)
	f := &memFixture{wv: wv, kv: &writeCounter{KV: kv}, clock: newClock()}
	o.Now = f.clock.now
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	f.s = New(c, f.kv, o)
	return f
}

func allowAll(context.Context) (bool, error) { return true, nil }

// memReq is user u opening page p (or, p < 0, the site chat) under
// installation i (each on its own site).
func memReq(i, u, p int) Request {
	r := Request{
		InstallationID: fmt.Sprintf("ari:cloud:ecosystem::installation/9a8b7c6d-5e4f-4a3b-8c2d-%012d", i),
		CloudID:        fmt.Sprintf("b7e5c1d4-2f3a-4e6b-9c8d-%012d", i),
		User:           fmt.Sprintf("712020:1c2d3e4f-5a6b-4c7d-8e9f-%012d", u),
		Target:         Target{Kind: KindSite},
	}
	if p >= 0 {
		r.Target, r.Check = Target{KindPage, strconv.Itoa(98305 + p)}, allowAll
	}
	return r
}

func (f *memFixture) sizes() (members, apps, inDir, sites, dirs int) {
	f.s.mu.RLock()
	defer f.s.mu.RUnlock()
	return len(f.s.members), len(f.s.apps), len(f.s.inDir), len(f.s.sites), len(f.s.dirs)
}

// Every map holds at most its bound while opens churn through more
// installations, sites, users and chats than any bound.
func TestMemoryBoundedUnderChurn(t *testing.T) {
	const maxEntries, maxApps, maxUsers, maxSites = 16, 8, 8, 3
	f := newMemFixture(t, Options{Recheck: time.Hour, MaxEntries: maxEntries, MaxApps: maxApps,
		MaxUsers: maxUsers, MaxSites: maxSites})
	var peak [5]int
	for n := range 300 {
		r := memReq(n%7, n%23, n%29-1) // page -1 is the site chat
		if _, err := f.s.Open(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		m, a, u, s, d := f.sizes()
		if m > maxEntries || a > maxApps || u > maxUsers || s > maxSites || d > maxSites {
			t.Fatalf("after %d opens memory holds members %d/%d, apps %d/%d, inDir %d/%d, sites %d/%d, dirs %d/%d",
				n+1, m, maxEntries, a, maxApps, u, maxUsers, s, maxSites, d, maxSites)
		}
		for i, v := range []int{m, a, u, s, d} {
			peak[i] = max(peak[i], v)
		}
		f.clock.advance(time.Minute)
	}
	if peak != [5]int{maxEntries, maxApps, maxUsers, maxSites, maxSites} {
		t.Errorf("peaks %v: every map should have reached its bound", peak)
	}
}

// What a full map evicts is counted by map, and each map's size and bound
// are on /metrics: nine distinct chats by nine users into maps of eight
// evict one entry from each of members, apps and directory.
func TestMemoryMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newMemFixture(t, Options{Recheck: time.Hour, MaxEntries: 8, MaxApps: 8, MaxUsers: 8, MaxSites: 3, Registerer: reg})
	for n := range 9 {
		if _, err := f.s.Open(context.Background(), memReq(0, n, n)); err != nil {
			t.Fatal(err)
		}
	}
	m, a, u, s, d := f.sizes()
	want := map[string]float64{
		`chat_memory_evictions_total{map="members"}`:   1,
		`chat_memory_evictions_total{map="apps"}`:      1,
		`chat_memory_evictions_total{map="directory"}`: 1,
		`chat_memory_evictions_total{map="sites"}`:     0,
		`chat_memory_evictions_total{map="dirs"}`:      0,
		`chat_memory_entries{map="members"}`:           float64(m),
		`chat_memory_entries{map="apps"}`:              float64(a),
		`chat_memory_entries{map="directory"}`:         float64(u),
		`chat_memory_entries{map="sites"}`:             float64(s),
		`chat_memory_entries{map="dirs"}`:              float64(d),
		`chat_memory_entries_max{map="members"}`:       8,
		`chat_memory_entries_max{map="apps"}`:          8,
		`chat_memory_entries_max{map="directory"}`:     8,
		`chat_memory_entries_max{map="sites"}`:         3,
		`chat_memory_entries_max{map="dirs"}`:          3,
	}
	if m != 8 || a != 8 || u != 8 || s != 1 || d != 1 {
		t.Fatalf("sizes: members %d, apps %d, directory %d, sites %d, dirs %d; want 8, 8, 8, 1, 1", m, a, u, s, d)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "chat_memory_") {
			continue
		}
		for _, metric := range mf.GetMetric() {
			name := mf.GetName() + `{map="` + metric.GetLabel()[0].GetValue() + `"}`
			if c := metric.GetCounter(); c != nil {
				got[name] = c.GetValue()
			} else {
				got[name] = metric.GetGauge().GetValue()
			}
		}
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, v)
		}
	}
}

// An evicted app, directory assignment, site or directory is read back from
// the store: the same chat, no Weavy call, no store write but the leases'
// renewals.
func TestEvictionCostsOnlyStoreReads(t *testing.T) {
	const insts, users, pages = 4, 6, 5
	f := newMemFixture(t, Options{Recheck: time.Hour, MaxApps: 4, MaxUsers: 4, MaxSites: 2})
	ctx := context.Background()
	ids := map[string]int64{}
	openAll := func() {
		t.Helper()
		for i := range insts {
			for u := range users {
				for p := -1; p < pages; p++ {
					r := memReq(i, u, p)
					c, err := f.s.Open(ctx, r)
					if err != nil {
						t.Fatal(err)
					}
					if id, seen := ids[c.UID]; seen && id != c.AppID {
						t.Fatalf("%s: app %d, then %d", c.UID, id, c.AppID)
					}
					ids[c.UID] = c.AppID
				}
			}
		}
	}
	openAll()
	_, apps, inDir, sites, dirs := f.sizes()
	if apps > 4 || inDir > 4 || sites > 2 || dirs > 2 {
		t.Fatalf("bounds not kept: apps %d, inDir %d, sites %d, dirs %d", apps, inDir, sites, dirs)
	}
	if len(ids) != insts*(pages+1) {
		t.Fatalf("%d apps, want %d", len(ids), insts*(pages+1))
	}
	// Past a quarter of the lease every open takes the slow path again,
	// through every evicted entry.
	f.clock.advance(f.s.Lease()/renewFraction + time.Second)
	admin, writes := f.wv.AdminCalls(), len(f.kv.writes)
	openAll()
	if d := f.wv.AdminCalls() - admin; d != 0 {
		t.Errorf("evicted entries cost %d Weavy calls: %q", d, f.wv.AdminRequests(admin))
	}
	if keys, total := f.kv.since(writes); len(keys) != 0 || total == writes {
		t.Errorf("evicted entries cost store writes %q (all writes %d: the leases must be renewed)", keys, total-writes)
	}
}

// A site record evicted from memory is checked against the store: another
// site for the installation is still refused.
func TestEvictedSiteStillPinned(t *testing.T) {
	f := newMemFixture(t, Options{MaxSites: 1})
	ctx := context.Background()
	for i := range 3 {
		if _, err := f.s.Open(ctx, memReq(i, 0, -1)); err != nil {
			t.Fatal(err)
		}
	}
	r := memReq(0, 0, -1)
	r.CloudID = memReq(1, 0, -1).CloudID
	if _, err := f.s.Open(ctx, r); err != ErrSiteMismatch {
		t.Fatalf("installation 0 on site 1: %v, want ErrSiteMismatch", err)
	}
}

// ForgetInstallation drops an installation's entries from every map, and
// none of another's (whose tag differs).
func TestForgetInstallationByTag(t *testing.T) {
	f := newMemFixture(t, Options{Recheck: time.Hour})
	ctx := context.Background()
	for i := range 2 {
		for p := -1; p < 2; p++ {
			if _, err := f.s.Open(ctx, memReq(i, 0, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	m0, a0, u0, s0, _ := f.sizes()
	f.s.ForgetInstallation(memReq(0, 0, 0).InstallationID)
	m, a, u, s, d := f.sizes()
	if m != m0/2 || a != a0/2 || u != u0/2 || s != s0/2 || d != 0 {
		t.Fatalf("after forgetting one of two installations: members %d of %d, apps %d of %d, inDir %d of %d, sites %d of %d, dirs %d",
			m, m0, a, a0, u, u0, s, s0, d)
	}
}

// Keys tell apart what their fields tell apart, however the fields are cut.
func TestMemKeysDistinct(t *testing.T) {
	k := newKeyer()
	seen := map[memKey]string{}
	add := func(key memKey, what string) {
		if prev, ok := seen[key]; ok {
			t.Errorf("%s and %s share a key", prev, what)
		}
		seen[key] = what
	}
	add(k.member(inst, cloud, Target{KindPage, "1"}, "2"), "page 1 user 2")
	add(k.member(inst, cloud, Target{KindPage, "12"}, ""), "page 12 no user")
	add(k.member(inst, cloud, Target{KindSpaceID, "1"}, "2"), "space id 1 user 2")
	add(k.member(strings.TrimPrefix(inst, installationARI), cloud, Target{KindPage, "1"}, "2"), "the bare installation uuid")
	add(k.app(inst, cloud, Target{KindPage, "1"}), "app page 1")
	add(k.user(inst, alice), "alice")
	add(k.user(inst+"a", alice[1:]), "shifted")
	add(k.site(inst), "site of inst")
	add(k.siteCloud(inst), "cloud named like inst")
	add(k.dir(inst), "dir named like inst")
	if k.app(inst, cloud, Target{KindPage, "1"}) != k.app(inst, cloud, Target{KindPage, "1"}) {
		t.Error("a key is not the same twice")
	}
	other := newKeyer()
	if other.app(inst, cloud, Target{KindPage, "1"}) == k.app(inst, cloud, Target{KindPage, "1"}) {
		t.Error("two services share a salt")
	}
}
