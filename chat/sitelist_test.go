package chat

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/open"
	"github.com/forge-remote/forge-remote/store/redistest"
)

// countingKV is a store that counts the Scans made and the Gets of site
// lists, and can make two Gets of a site list meet (each, once it has read,
// waits a little while for the other) so that two opens read the list before
// either writes it.
type countingKV struct {
	store.KV
	mu    sync.Mutex
	scans []string // the prefixes scanned
	gets  int      // Gets of a chat/sitelist/ key
	meet  chan struct{}
}

func (k *countingKV) Scan(ctx context.Context, prefix string, fn func(string, []byte) error) error {
	k.mu.Lock()
	k.scans = append(k.scans, prefix)
	k.mu.Unlock()
	return k.KV.Scan(ctx, prefix, fn)
}

func (k *countingKV) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := k.KV.Get(ctx, key)
	if strings.HasPrefix(key, siteListPrefix) {
		k.mu.Lock()
		k.gets++
		meet := k.meet
		k.mu.Unlock()
		if meet != nil { // both have read before either goes on
			select {
			case meet <- struct{}{}:
			case <-meet:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return v, err
}

// counts returns the Scans and site list Gets since the last call.
func (k *countingKV) counts() (scans []string, gets int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	scans, gets = k.scans, k.gets
	k.scans, k.gets = nil, 0
	return scans, gets
}

// siteListFixture is a Service over a counting store.
type siteListFixture struct {
	*accessFixture
	ckv *countingKV
}

// newSiteListFixture is a lease fixture over kv (nil: its memory store),
// counted.
func newSiteListFixture(t *testing.T, kv store.KV) *siteListFixture {
	t.Helper()
	f := newLeaseFixture(t)
	if kv == nil {
		kv = f.kv
	}
	ckv := &countingKV{KV: kv}
	f.kv = ckv
	f.s = f.replica()
	return &siteListFixture{accessFixture: f, ckv: ckv}
}

// siteList reads the site's list from the store; ok is false when there is none.
func (f *siteListFixture) siteList(t *testing.T, cloudID string) (insts []string, ok bool) {
	t.Helper()
	b, err := f.ckv.KV.Get(context.Background(), siteListKey(cloudID)) // uncounted
	if errNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	insts, ok = decodeSiteList(b)
	if !ok {
		t.Fatalf("the site list %q does not decode", b)
	}
	return insts, true
}

// recordOld records inst on cloudID as the previous version did: its site
// record and its chat/onsite/ record, no list.
func recordOld(t *testing.T, kv store.KV, inst, cloudID string) {
	t.Helper()
	ctx := context.Background()
	if err := kv.Put(ctx, siteKey(inst), []byte(cloudID), 0); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx, onSiteKey(cloudID, inst), []byte(inst), 0); err != nil {
		t.Fatal(err)
	}
}

// After the first open on a site, the first open of each other chat there
// (a provisioning, which lists the site's installations) is one Get of the
// site's list and no Scan; a replica's first open on the site adds one Get
// (its check of the site) and no Scan either.
func TestSiteListFirstOpensDoNotScan(t *testing.T) {
	siteListFirstOpensDoNotScan(t, newSiteListFixture(t, nil))
}

func siteListFirstOpensDoNotScan(t *testing.T, f *siteListFixture) {
	for p := range 6 {
		f.conf.allow(fmt.Sprint(p+1), alice, bob)
	}
	f.open(t, f.s, f.reqOn(inst, cloud, alice, "1"))
	if scans, _ := f.ckv.counts(); len(scans) == 0 {
		t.Fatal("the site's first open made no Scan: is the list written beforehand?")
	}
	if got, ok := f.siteList(t, cloud); !ok || !slices.Equal(got, []string{inst}) {
		t.Fatalf("the site's list after its first open: %q %v; want [inst]", got, ok)
	}
	admin := f.wv.AdminCalls()
	for p := 2; p <= 4; p++ {
		f.open(t, f.s, f.reqOn(inst, cloud, bob, fmt.Sprint(p)))
		scans, gets := f.ckv.counts()
		if len(scans) != 0 || gets != 1 {
			t.Fatalf("first open of page %d: Scans %q, site list Gets %d; want none, 1", p, scans, gets)
		}
	}
	if f.wv.AdminCalls() == admin {
		t.Fatal("the opens provisioned nothing")
	}
	r := f.replica()
	f.open(t, r, f.reqOn(inst, cloud, alice, "5"))
	if scans, gets := f.ckv.counts(); len(scans) != 0 || gets != 2 {
		t.Fatalf("a replica's first open: Scans %q, site list Gets %d; want none, 2", scans, gets)
	}
	f.open(t, r, f.reqOn(inst, cloud, alice, "6"))
	if scans, gets := f.ckv.counts(); len(scans) != 0 || gets != 1 {
		t.Fatalf("the replica's next first open: Scans %q, site list Gets %d; want none, 1", scans, gets)
	}
}

// A store the previous version wrote (chat/onsite/ records, no list): the
// site's installations are found by one Scan, the list is written from it,
// and nothing scans again. The other installation's member stays through
// a provisioning under the first.
func TestSiteListFromPreviousVersion(t *testing.T) {
	siteListFromPreviousVersion(t, newSiteListFixture(t, nil))
}

func siteListFromPreviousVersion(t *testing.T, f *siteListFixture) {
	ctx := context.Background()
	// instStaging opens page 1 (alice); then the store is made to look as
	// the previous version left it: no list.
	f.open(t, f.s, f.reqOn(instStaging, cloud, alice, "1"))
	if err := f.kv.Delete(ctx, siteListKey(cloud)); err != nil {
		t.Fatal(err)
	}
	recordOld(t, f.kv, inst, cloud)
	f.ckv.counts()

	s := f.replica()
	got, err := s.installationsOn(ctx, cloud)
	want := []string{instStaging, inst}
	slices.Sort(want)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("installationsOn: %q %v; want %q", got, err, want)
	}
	if scans, _ := f.ckv.counts(); !slices.Equal(scans, []string{onSiteOf(cloud)}) {
		t.Fatalf("Scans %q; want one of the site's chat/onsite/ records", scans)
	}
	if l, ok := f.siteList(t, cloud); !ok || !slices.Equal(l, want) {
		t.Fatalf("the list written: %q %v; want %q", l, ok, want)
	}
	if got, err := s.installationsOn(ctx, cloud); err != nil || !slices.Equal(got, want) {
		t.Fatalf("installationsOn again: %q %v; want %q", got, err, want)
	}
	if scans, gets := f.ckv.counts(); len(scans) != 0 || gets != 1 {
		t.Fatalf("installationsOn again: Scans %q, Gets %d; want none, 1", scans, gets)
	}

	// The same through opens, by a fresh replica on a fresh copy of the old
	// records: inst's first provisioning of page 1 keeps alice, leased
	// under instStaging alone.
	if err := f.kv.Delete(ctx, siteListKey(cloud)); err != nil {
		t.Fatal(err)
	}
	f.ckv.counts()
	m := f.weavy.mark()
	r := f.replica()
	f.open(t, r, f.reqOn(inst, cloud, bob, "1"))
	if got := f.weavy.since(m); slices.ContainsFunc(got, func(c string) bool { return strings.HasSuffix(c, alice) }) ||
		!f.isMember(alice, cloud, "1") || f.removed(t, "squatter") != 0 {
		t.Fatalf("inst's first open of page 1: member calls %q; alice a member %v", got, f.isMember(alice, cloud, "1"))
	}
	if scans, _ := f.ckv.counts(); len(scans) != 1 {
		t.Fatalf("a replica's first opens on a site with no list: Scans %q; want one", scans)
	}
	f.conf.allow("2", alice, bob)
	f.open(t, r, f.reqOn(inst, cloud, bob, "2"))
	if scans, _ := f.ckv.counts(); len(scans) != 0 {
		t.Fatalf("the next first open: Scans %q; want none", scans)
	}
}

// A replica of the previous version recorded instStaging on a site whose
// list this version had written already: the list lacks it until an open
// of instStaging reaches this version, whose check of the site adds it.
func TestSiteListHealsRecordsOfThePreviousVersion(t *testing.T) {
	siteListHealsRecordsOfThePreviousVersion(t, newSiteListFixture(t, nil))
}

func siteListHealsRecordsOfThePreviousVersion(t *testing.T, f *siteListFixture) {
	f.open(t, f.s, f.reqOn(inst, cloud, alice, "1"))
	recordOld(t, f.kv, instStaging, cloud)
	if l, _ := f.siteList(t, cloud); slices.Contains(l, instStaging) {
		t.Fatal("setup: the list has instStaging")
	}
	f.open(t, f.replica(), f.reqOn(instStaging, cloud, bob, "1"))
	want := []string{inst, instStaging}
	slices.Sort(want)
	if l, ok := f.siteList(t, cloud); !ok || !slices.Equal(l, want) {
		t.Fatalf("the list after instStaging's open: %q %v; want %q", l, ok, want)
	}
	if scans, _ := f.ckv.counts(); len(scans) != 1 {
		t.Fatalf("Scans %q; want the site's first", scans)
	}
}

// Two installations on one site (Forge environments) first opening at once,
// each on its own replica, on a new site, and on a site listing a third:
// the list ends with every one of them.
func TestSiteListConcurrentInstallations(t *testing.T) {
	siteListConcurrentInstallations(t, newSiteListFixture(t, nil))
}

func siteListConcurrentInstallations(t *testing.T, f *siteListFixture) {
	for round := range 20 {
		cloudID := fmt.Sprintf("b7e5c1d4-2f3a-4e6b-9c8d-%012d", round)
		instOf := func(env int) string {
			return fmt.Sprintf("ari:cloud:ecosystem::installation/9a8b7c6d-5e4f-4a3b-%04d-%012d", env, round)
		}
		two := []string{instOf(1), instOf(2)}
		want := slices.Clone(two)
		if round%2 == 1 {
			f.open(t, f.replica(), f.reqOn(instOf(3), cloudID, alice, "1"))
			want = append(want, instOf(3))
		}
		slices.Sort(want)
		f.ckv.mu.Lock()
		f.ckv.meet = make(chan struct{})
		f.ckv.mu.Unlock()
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, in := range two {
			r := f.replica()
			wg.Go(func() {
				_, errs[i] = r.Open(context.Background(), f.reqOn(in, cloudID, bob, "1"))
			})
		}
		wg.Wait()
		f.ckv.mu.Lock()
		f.ckv.meet = nil
		f.ckv.mu.Unlock()
		if err := errs[0]; err != nil {
			t.Fatal(err)
		}
		if err := errs[1]; err != nil {
			t.Fatal(err)
		}
		if l, ok := f.siteList(t, cloudID); !ok || !slices.Equal(l, want) {
			t.Fatalf("round %d: the list %q %v; want %q", round, l, ok, want)
		}
	}
}

// The uninstall of one of two installations on a site leaves the other in
// the site's list; the last one's takes the list, and every chat/onsite/ and
// chat/site/ record, with it.
func TestSiteListUninstall(t *testing.T) { siteListUninstall(t, newSiteListFixture(t, nil)) }

func siteListUninstall(t *testing.T, f *siteListFixture) {
	ctx := context.Background()
	f.open(t, f.s, f.reqOn(inst, cloud, alice, "1"))
	f.open(t, f.s, f.reqOn(instStaging, cloud, bob, "1"))
	if err := f.s.PurgeInstallation(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if l, ok := f.siteList(t, cloud); !ok || !slices.Equal(l, []string{instStaging}) {
		t.Fatalf("the list after inst's uninstall: %q %v; want [instStaging]", l, ok)
	}
	if !f.isMember(bob, cloud, "1") || !f.wv.Directory(DirectoryName(cloud)) {
		t.Fatalf("bob, leased under instStaging: member %v; the site's directory kept %v", f.isMember(bob, cloud, "1"),
			f.wv.Directory(DirectoryName(cloud)))
	}
	if err := f.s.PurgeInstallation(ctx, instStaging); err != nil {
		t.Fatal(err)
	}
	if l, ok := f.siteList(t, cloud); ok {
		t.Fatalf("the list after the last uninstall: %q", l)
	}
	if f.wv.Directory(DirectoryName(cloud)) {
		t.Fatal("the site's directory outlived its last installation")
	}
	wantNoRecords(t, f.kv, cloud)
}

// Two installations of one site (two Forge environments) uninstalled at
// once: instStaging's purge runs whole while inst's is between its look at
// the site and its end (inside its first Weavy removal). Each saw the other
// when it looked, so both kept the site's directory for it; now the later
// to look sees neither, and the directory, the members and the records go.
func TestSiteListUninstallAtOnce(t *testing.T) {
	siteListUninstallAtOnce(t, newSiteListFixture(t, nil))
}

func siteListUninstallAtOnce(t *testing.T, f *siteListFixture) {
	ctx := context.Background()
	f.open(t, f.s, f.reqOn(inst, cloud, alice, "1"))
	f.open(t, f.s, f.reqOn(instStaging, cloud, bob, "1"))
	var started atomic.Bool
	var inner error
	f.weavy.hooks(nil, func(int64, string) {
		if started.CompareAndSwap(false, true) { // inst's first removal, not the nested purge's
			inner = f.s.PurgeInstallation(ctx, instStaging)
		}
	})
	if err := f.s.PurgeInstallation(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if !started.Load() || inner != nil {
		t.Fatalf("the nested purge of instStaging: ran %v, %v", started.Load(), inner)
	}
	if f.wv.Directory(DirectoryName(cloud)) {
		t.Error("the site's directory outlived both installations, purged at once")
	}
	if f.isMember(alice, cloud, "1") || f.isMember(bob, cloud, "1") {
		t.Errorf("members left: alice %v, bob %v", f.isMember(alice, cloud, "1"), f.isMember(bob, cloud, "1"))
	}
	if l, ok := f.siteList(t, cloud); ok {
		t.Errorf("the list after both uninstalls: %q", l)
	}
	wantNoRecords(t, f.kv, cloud)
}

// An installation the previous version purged (its site and chat/onsite/
// records gone, its id still in the list this version wrote) shares nothing:
// the uninstall of the site's last installation deletes its directory and
// the list.
func TestSiteListUninstallDropsPurgedInstallations(t *testing.T) {
	siteListUninstallDropsPurgedInstallations(t, newSiteListFixture(t, nil))
}

func siteListUninstallDropsPurgedInstallations(t *testing.T, f *siteListFixture) {
	ctx := context.Background()
	f.open(t, f.s, f.reqOn(inst, cloud, alice, "1"))
	f.open(t, f.s, f.reqOn(instStaging, cloud, bob, "1"))
	// The previous version's purge of instStaging.
	for _, k := range []string{onSiteKey(cloud, instStaging), siteKey(instStaging)} {
		if err := f.kv.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.PurgeInstallation(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if l, ok := f.siteList(t, cloud); ok {
		t.Fatalf("the list after the last uninstall: %q", l)
	}
	if f.wv.Directory(DirectoryName(cloud)) {
		t.Fatal("the site's directory is kept for an installation purged already")
	}
	wantNoRecords(t, f.kv, cloud)
}

// wantNoRecords fails if the store holds a chat/sitelist/, chat/onsite/ or
// chat/site/ record of cloudID's.
func wantNoRecords(t *testing.T, kv store.KV, cloudID string) {
	t.Helper()
	for _, prefix := range []string{siteListPrefix, onSitePrefix, sitePrefix} {
		err := kv.Scan(context.Background(), prefix, func(k string, v []byte) error {
			if strings.Contains(k, esc(cloudID)) || string(v) == cloudID {
				t.Errorf("left behind: %s", k)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The same on Redis, whose Update is optimistic (its function may run more
// than once) and whose Scan walks the keyspace.
func TestSiteListRedis(t *testing.T) {
	rs := redistest.Start(t)
	key := make([]byte, store.KeySize)
	for name, run := range map[string]func(*testing.T, *siteListFixture){
		"FirstOpensDoNotScan": siteListFirstOpensDoNotScan, "FromPreviousVersion": siteListFromPreviousVersion,
		"HealsRecordsOfThePreviousVersion": siteListHealsRecordsOfThePreviousVersion,
		"ConcurrentInstallations":          siteListConcurrentInstallations, "Uninstall": siteListUninstall,
		"UninstallDropsPurgedInstallations": siteListUninstallDropsPurgedInstallations,
		"UninstallAtOnce":                   siteListUninstallAtOnce,
	} {
		t.Run(name, func(t *testing.T) {
			if err := rs.Client().FlushAll(t.Context()).Err(); err != nil {
				t.Fatal(err)
			}
			kv, err := open.Store(t.Context(), open.Options{URL: rs.URL(), Key: key})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = kv.Close() })
			run(t, newSiteListFixture(t, kv))
		})
	}
}

// Site lists are stored sorted, each id once, and a list that does not
// decode is none.
func TestSiteListRecord(t *testing.T) {
	b := encodeSiteList([]string{"b", "a", "b", ""})
	if string(b) != `["a","b"]` {
		t.Fatalf("encoded %s", b)
	}
	if l, ok := decodeSiteList([]byte(`["c","a","c"]`)); !ok || !slices.Equal(l, []string{"a", "c"}) {
		t.Fatalf("decoded %q %v", l, ok)
	}
	for _, bad := range [][]byte{nil, []byte("x"), []byte(`{"a":1}`)} {
		if l, ok := decodeSiteList(bad); ok {
			t.Fatalf("%q decoded to %q", bad, l)
		}
	}
	if b := encodeSiteList(nil); string(b) != `[]` {
		t.Fatalf("empty list encoded %s", b)
	}
}
