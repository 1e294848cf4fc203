package forge_test

import (
	"context"
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
)

// countingKV counts writes so tests can prove a repeated token costs none.
type countingKV struct {
	store.KV
	updates atomic.Int64
	writes  atomic.Int64
}

func (c *countingKV) Update(ctx context.Context, key string, fn store.UpdateFunc) error {
	c.updates.Add(1)
	return c.KV.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		v, ttl, err := fn(old, exists)
		if err == nil {
			c.writes.Add(1)
		}
		return v, ttl, err
	})
}

func inv(inst string) *forge.Invocation {
	return &forge.Invocation{App: forge.App{
		InstallationID: inst,
		APIBaseURL:     "https://api.atlassian.com/ex/confluence/c1",
		Installation:   &forge.Installation{Contexts: []forge.InstallationContext{{CloudID: "c1"}}},
	}}
}

func TestAppTokensCapture(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	kv := &countingKV{KV: newMemory(t, clock)}
	a := forge.NewAppTokens(kv, forge.AppTokensOptions{Now: clock})
	ctx := context.Background()
	const inst = "ari:cloud:ecosystem::installation/1"

	if _, err := a.Get(ctx, inst); !errors.Is(err, forge.ErrUnknownInstallation) {
		t.Fatalf("unknown: %v", err)
	}
	t1 := forgetest.MintAppToken(t, now.Add(3*time.Hour))
	if err := a.Capture(ctx, inv(inst), t1); err != nil {
		t.Fatal(err)
	}
	got, err := a.Get(ctx, inst)
	if err != nil || got.Token != t1 || !got.Exp.Equal(now.Add(3*time.Hour)) || got.CloudID != "c1" {
		t.Fatalf("get: %+v %v", got, err)
	}
	// The same token again, many times: no store access at all.
	u := kv.updates.Load()
	for range 100 {
		if err := a.Capture(ctx, inv(inst), t1); err != nil {
			t.Fatal(err)
		}
	}
	if kv.updates.Load() != u {
		t.Fatalf("a repeated token touched the store")
	}
	// An older token is not stored.
	w := kv.writes.Load()
	if err := a.Capture(ctx, inv(inst), forgetest.MintAppToken(t, now.Add(2*time.Hour))); err != nil {
		t.Fatal(err)
	}
	if kv.writes.Load() != w {
		t.Fatalf("an older token was written")
	}
	if got, _ := a.Get(ctx, inst); got.Token != t1 {
		t.Fatalf("older token replaced the newer one")
	}
	// Nearly expired → stale, naming the expiry.
	now = now.Add(3*time.Hour - 4*time.Minute)
	_, err = a.Get(ctx, inst)
	var se *forge.StaleError
	if !errors.Is(err, forge.ErrAppTokenStale) || !errors.As(err, &se) || !se.Exp.Equal(now.Add(4*time.Minute)) {
		t.Fatalf("stale: %v", err)
	}
	// A fresh token arriving ends staleness.
	t2 := forgetest.MintAppToken(t, now.Add(2*time.Hour))
	if err := a.Capture(ctx, inv(inst), t2); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(ctx, inst); err != nil || got.Token != t2 {
		t.Fatalf("after refresh: %v", err)
	}
	// An opaque (non-JWT) token is assumed to live the documented 2 h minimum,
	// and repeating it costs no write.
	inst2 := "ari:cloud:ecosystem::installation/2"
	if err := a.Capture(ctx, inv(inst2), "opaque-token"); err != nil {
		t.Fatal(err)
	}
	got, _ = a.Get(ctx, inst2)
	if !got.Exp.Equal(now.Add(2 * time.Hour)) {
		t.Fatalf("opaque exp %v", got.Exp)
	}
	w = kv.writes.Load()
	now = now.Add(time.Minute)
	_ = a.Capture(ctx, inv(inst2), "opaque-token")
	if kv.writes.Load() != w {
		t.Fatalf("a repeated opaque token was written again")
	}
	if err := a.Delete(ctx, inst2); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, inst2); !errors.Is(err, forge.ErrUnknownInstallation) {
		t.Fatalf("after delete: %v", err)
	}
}

// Two processes sharing a store: the one with an out-of-date memory must not
// overwrite a newer token with an older one.
func TestAppTokensCompareInStore(t *testing.T) {
	now := time.Now()
	kv := newMemory(t, nil)
	a, b := forge.NewAppTokens(kv, forge.AppTokensOptions{}), forge.NewAppTokens(kv, forge.AppTokensOptions{})
	ctx := context.Background()
	const inst = "i"
	newer := forgetest.MintAppToken(t, now.Add(4*time.Hour))
	older := forgetest.MintAppToken(t, now.Add(3*time.Hour))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = a.Capture(ctx, inv(inst), newer) }()
	go func() { defer wg.Done(); _ = b.Capture(ctx, inv(inst), older) }()
	wg.Wait()
	_ = b.Capture(ctx, inv(inst), older)
	if got, _ := b.Get(ctx, inst); got.Token != newer {
		t.Fatalf("the older token won")
	}
}

func TestTokenExpiry(t *testing.T) {
	exp := time.Unix(1_800_000_000, 0).UTC()
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name  string
		token string
		ok    bool
		want  time.Time
	}{
		{"jwt", forgetest.MintAppToken(t, exp), true, exp},
		{"padded", seg(`{}`) + "." + base64.URLEncoding.EncodeToString([]byte(`{"exp":1800000000}`)) + ".sig", true, exp},
		{"float exp", seg(`{}`) + "." + seg(`{"exp":1800000000.5}`) + ".s", true, exp.Add(500 * time.Millisecond)},
		{"no dots", "opaque", false, time.Time{}},
		{"one dot", "a.b", false, time.Time{}},
		{"bad base64", "a.!!!.c", false, time.Time{}},
		{"not json", "a." + seg("nope") + ".c", false, time.Time{}},
		{"no exp", "a." + seg(`{"iat":1}`) + ".c", false, time.Time{}},
		{"string exp", "a." + seg(`{"exp":"soon"}`) + ".c", false, time.Time{}},
		{"negative exp", "a." + seg(`{"exp":-5}`) + ".c", false, time.Time{}},
		{"absurd exp", "a." + seg(`{"exp":1e300}`) + ".c", false, time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := forge.TokenExpiry(tc.token)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Fatalf("TokenExpiry = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func BenchmarkCaptureRepeat(b *testing.B) {
	a := forge.NewAppTokens(newMemory(b, nil), forge.AppTokensOptions{})
	tok := forgetest.MintAppToken(b, time.Now().Add(3*time.Hour))
	in := inv("i")
	ctx := context.Background()
	_ = a.Capture(ctx, in, tok)
	b.ReportAllocs()
	for b.Loop() {
		_ = a.Capture(ctx, in, tok)
	}
}

// Two replicas share a store: each hands out what the other captured, and a
// purge by one is forgotten by the other once told.
func TestAppTokensAcrossReplicas(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	kv := newMemory(t, clock)
	a := forge.NewAppTokens(kv, forge.AppTokensOptions{Now: clock})
	b := forge.NewAppTokens(kv, forge.AppTokensOptions{Now: clock})
	ctx := context.Background()
	const inst = "ari:cloud:ecosystem::installation/1"

	t1 := forgetest.MintAppToken(t, now.Add(2*time.Hour))
	for _, r := range []*forge.AppTokens{a, b} {
		if err := r.Capture(ctx, inv(inst), t1); err != nil {
			t.Fatal(err)
		}
	}
	t2 := forgetest.MintAppToken(t, now.Add(3*time.Hour))
	if err := a.Capture(ctx, inv(inst), t2); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, inst); err != nil || got.Token != t2 {
		t.Fatalf("b hands out %v, %v; want a's newer token", got, err)
	}

	for _, forget := range []func(){func() { b.Forget(inst) }, b.ForgetAll} {
		if err := b.Capture(ctx, inv(inst), t2); err != nil { // b remembers t2
			t.Fatal(err)
		}
		if err := a.PurgeInstallation(ctx, inst); err != nil {
			t.Fatal(err)
		}
		forget()
		// Reinstalled: Forge delivers the same token to b, which must store it.
		if err := b.Capture(ctx, inv(inst), t2); err != nil {
			t.Fatal(err)
		}
		if got, err := a.Get(ctx, inst); err != nil || got.Token != t2 {
			t.Fatalf("after a purge and a redelivery to b: %v, %v", got, err)
		}
	}
}

// A forged x-forge-oauth-system header (a user replaying their own FIT with
// headers of their choosing) cannot pin a bogus token: its claimed expiry is
// capped at Forge's 4 h maximum, and the first 401 from Atlassian lets the
// next genuine token in.
func TestAppTokensForgedExpiryCapped(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	kv := newMemory(t, clock)
	a := forge.NewAppTokens(kv, forge.AppTokensOptions{Now: clock})
	ctx := context.Background()
	const inst = "ari:cloud:ecosystem::installation/1"

	forged := forgetest.MintAppToken(t, now.Add(48*time.Hour))
	if err := a.Capture(ctx, inv(inst), forged); err != nil {
		t.Fatal(err)
	}
	got, err := a.Get(ctx, inst)
	if err != nil || !got.Exp.Equal(now.Add(4*time.Hour)) {
		t.Fatalf("forged expiry not capped: %v %v", got.Exp, err)
	}
	// A genuine token arriving an hour later, expiring past the cap, wins.
	now = now.Add(time.Hour)
	genuine := forgetest.MintAppToken(t, now.Add(3*time.Hour+time.Minute))
	if err := a.Capture(ctx, inv(inst), genuine); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Get(ctx, inst); got.Token != genuine {
		t.Fatal("a genuine token later than the cap was not captured")
	}
	// And one that does not outlive the cap gets in once the forged one is
	// refused by Atlassian.
	a2 := forge.NewAppTokens(newMemory(t, clock), forge.AppTokensOptions{Now: clock})
	if err := a2.Capture(ctx, inv(inst), forged); err != nil {
		t.Fatal(err)
	}
	if err := a2.MarkUnusable(ctx, inst, forged); err != nil {
		t.Fatal(err)
	}
	short := forgetest.MintAppToken(t, now.Add(2*time.Hour))
	if err := a2.Capture(ctx, inv(inst), short); err != nil {
		t.Fatal(err)
	}
	if got, err := a2.Get(ctx, inst); err != nil || got.Token != short {
		t.Fatalf("after the 401: %v %v", got.Token == short, err)
	}
}

// A token delivered with a user's FIT (which the user may have replayed with
// headers of their own) never replaces a fresh token, and the next trigger's
// token replaces it whatever the expiries.
func TestAppTokensUserDeliveredTokensOnlyFillGaps(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	kv := newMemory(t, clock)
	a := forge.NewAppTokens(kv, forge.AppTokensOptions{Now: clock})
	ctx := context.Background()
	const inst = "ari:cloud:ecosystem::installation/1"
	user := inv(inst)
	user.Principal = "712020:someone"
	user.Context.CloudID = "c1"
	if user.FromTrigger() || !inv(inst).FromTrigger() {
		t.Fatal("FromTrigger does not tell a user's FIT from a trigger's")
	}

	genuine := forgetest.MintAppToken(t, now.Add(2*time.Hour))
	if err := a.Capture(ctx, inv(inst), genuine); err != nil {
		t.Fatal(err)
	}
	forged := forgetest.MintAppToken(t, now.Add(4*time.Hour))
	if err := a.Capture(ctx, user, forged); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Get(ctx, inst); got.Token != genuine {
		t.Fatal("a user-delivered token replaced a fresh one")
	}
	// A second process (no memory) agrees: the store's compare applies the rule.
	b := forge.NewAppTokens(kv, forge.AppTokensOptions{Now: clock})
	if err := b.Capture(ctx, user, forged); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Get(ctx, inst); got.Token != genuine {
		t.Fatal("a user-delivered token replaced a fresh one in the store")
	}

	// When nothing fresh is held, a user-delivered token fills the gap...
	now = now.Add(2 * time.Hour)
	gap := forgetest.MintAppToken(t, now.Add(4*time.Hour))
	if err := a.Capture(ctx, user, gap); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(ctx, inst); err != nil || got.Token != gap || !got.FromUser {
		t.Fatalf("gap not filled: %v", err)
	}
	// ...until the next trigger's token, even one expiring earlier.
	next := forgetest.MintAppToken(t, now.Add(2*time.Hour))
	if err := a.Capture(ctx, inv(inst), next); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Get(ctx, inst); got.Token != next || got.FromUser {
		t.Fatal("a trigger's token did not replace a user-delivered one")
	}
}

// After a STORE_KEY rotation, a record sealed under the old key is as good as
// none: unknown, not a store failure (503), until Forge's next call.
func TestAppTokensAfterKeyRotation(t *testing.T) {
	ctx := context.Background()
	inner := newMemory(t, nil)
	old, err := store.NewSealed(inner, make([]byte, store.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	if err := forge.NewAppTokens(old, forge.AppTokensOptions{}).Capture(ctx, inv("i"), forgetest.MintAppToken(t, time.Now().Add(3*time.Hour))); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, store.KeySize)
	key[0] = 1
	rotated, err := store.NewSealed(inner, key)
	if err != nil {
		t.Fatal(err)
	}
	a := forge.NewAppTokens(rotated, forge.AppTokensOptions{})
	if _, err := a.Usable(ctx, "i"); !errors.Is(err, forge.ErrUnknownInstallation) {
		t.Fatalf("old-key record: %v", err)
	}
	fresh := forgetest.MintAppToken(t, time.Now().Add(2*time.Hour))
	if err := a.Capture(ctx, inv("i"), fresh); err != nil {
		t.Fatalf("capture over an old-key record: %v", err)
	}
	if got, err := a.Usable(ctx, "i"); err != nil || got.Token != fresh {
		t.Fatalf("after capture: %v", err)
	}
}

// newMemory is a memory store closed (its reaper stopped) when the test ends.
func newMemory(t testing.TB, now func() time.Time) *memory.Store {
	t.Helper()
	kv := memory.New(now)
	t.Cleanup(func() { _ = kv.Close() })
	return kv
}
