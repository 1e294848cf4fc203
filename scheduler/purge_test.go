package scheduler

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// timers is a manual clock's After: a timer fires when fire finds the
// clock past it.
type timers struct {
	now  func() time.Time
	mu   sync.Mutex
	wait []timer
}

type timer struct {
	at time.Time
	ch chan time.Time
}

func (tm *timers) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	at := tm.now().Add(d)
	if d <= 0 {
		ch <- at
		return ch
	}
	tm.mu.Lock()
	tm.wait = append(tm.wait, timer{at, ch})
	tm.mu.Unlock()
	return ch
}

// fire fires the timers the clock passed.
func (tm *timers) fire() {
	now := tm.now()
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.wait = slices.DeleteFunc(tm.wait, func(t timer) bool {
		if t.at.After(now) {
			return false
		}
		t.ch <- now
		return true
	})
}

// joined runs every Purger, as the server's purgers do.
type joined []Purger

func (j joined) PurgeInstallation(ctx context.Context, inst string) error {
	var errs []error
	for _, p := range j {
		errs = append(errs, p.PurgeInstallation(ctx, inst))
	}
	return errors.Join(errs...)
}

// purgeEnv is an env whose Purger is the real chat service and broker over
// weavysim, and whose purges wait on manual timers.
type purgeEnv struct {
	*env
	tm     *timers
	chat   *chat.Service
	broker *weavy.Broker
}

func newPurgeEnv(t *testing.T, edit func(*testOptions)) *purgeEnv {
	t.Helper()
	p := &purgeEnv{}
	p.env = newEnv(t, func(o *testOptions) {
		p.tm = &timers{now: o.Now}
		o.After = func(d time.Duration) <-chan time.Time { return p.tm.After(d) }
		o.PurgerOn = func(q *Queue) Purger {
			p.chat = chat.New(o.Weavy.(*weavy.Client), o.KV, chat.Options{Now: o.Now})
			p.broker = weavy.NewBroker(o.Weavy.(*weavy.Client), o.KV, weavy.BrokerOptions{Now: o.Now, Observer: q})
			return joined{p.chat, p.broker}
		}
		if edit != nil {
			edit(o)
		}
	})
	return p
}

// advance moves time on and lets the purge loop look: its timer may have
// fired (the wake makes that deterministic), then waits until it is idle.
func (p *purgeEnv) advance(d time.Duration) {
	p.clock.Advance(d)
	p.tm.fire()
	p.svc.purges.wake()
	p.svc.settle()
}

const pageA, pageB = "98305", "65537"

// open opens a page chat and mints a token for user on inst's site.
func (p *purgeEnv) open(t *testing.T, inst, cloud, user, page string) {
	t.Helper()
	r := chat.Request{InstallationID: inst, CloudID: cloud, User: user, Target: chat.Target{Kind: chat.KindPage, ID: page},
		Check: func(context.Context) (bool, error) { return true, nil }} // Confluence lets everyone view the page
	if _, err := p.chat.Open(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := p.broker.Token(t.Context(), inst, user, false); err != nil {
		t.Fatal(err)
	}
}

func (p *purgeEnv) members(cloud, page string) []string {
	app, _ := p.weavy.App(chat.AppUID(cloud, chat.Target{Kind: chat.KindPage, ID: page}))
	var out []string
	for uid := range app.Members {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

func (p *purgeEnv) tokenKeys(t *testing.T, inst string) int {
	n := 0
	for _, k := range p.keys(t) {
		if strings.HasPrefix(k, weavy.StorePrefix) && belongsTo(k, inst) {
			n++
		}
	}
	return n
}

func (p *purgeEnv) purges(t *testing.T) []Purge {
	t.Helper()
	list, err := p.svc.Purges(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// With Weavy failing every call, the uninstall still answers at once and
// stores its purge; the purge retries with a doubling back-off, and once
// Weavy recovers it removes the site's members, its directory and its users'
// tokens, then the installation's records, all while the tombstone stands.
// The other site is untouched.
func TestUninstallDuringWeavyOutagePurgesLater(t *testing.T) {
	p := newPurgeEnv(t, nil)
	ctx := t.Context()
	for _, u := range []string{"ada", "bob"} {
		p.open(t, instA, cloudA, u, pageA)
	}
	p.open(t, instB, cloudB, "ada", pageB)
	if err := p.svc.Lifecycle(ctx, p.inv(instA, cloudA), []byte(installedEvent(instA))); err != nil {
		t.Fatal(err)
	}
	p.svc.settle()
	dirA, dirB := chat.DirectoryName(cloudA), chat.DirectoryName(cloudB)
	if !p.weavy.Directory(dirA) || len(p.members(cloudA, pageA)) != 2 || p.tokenKeys(t, instA) != 2 {
		t.Fatalf("setup: directory %v, members %v, tokens %d", p.weavy.Directory(dirA), p.members(cloudA, pageA), p.tokenKeys(t, instA))
	}

	p.weavy.FailAdmin.Store(true)
	if err := p.svc.Uninstall(ctx, p.inv(instA, cloudA)); err != nil {
		t.Fatalf("uninstall during the outage: %v", err)
	}
	if !slices.Contains(p.keys(t), purgeKey(instA)) || !slices.Contains(p.keys(t), tombstoneKey(instA)) {
		t.Fatalf("purge or tombstone not stored before the answer: %q", p.keys(t))
	}
	p.svc.settle()
	list := p.purges(t)
	if len(list) != 1 || list[0].Attempts != 1 || list[0].LastError == "" || !list[0].NextAttemptAt.Equal(p.clock.Now().Add(5*time.Second)) {
		t.Fatalf("after the first attempt: %+v", list)
	}
	if got := p.counter(t, "uninstall_purge_attempts_total", map[string]string{"result": "error"}); got != 1 {
		t.Fatalf("error attempts = %v", got)
	}
	// Not due yet: nothing is tried.
	calls := p.weavy.AdminCalls()
	p.advance(4 * time.Second)
	if p.weavy.AdminCalls() != calls || p.purges(t)[0].Attempts != 1 {
		t.Fatal("a purge was retried before its back-off")
	}
	p.advance(time.Second)
	if list := p.purges(t); list[0].Attempts != 2 || list[0].NextAttemptAt.Sub(list[0].LastAttemptAt) != 10*time.Second {
		t.Fatalf("second attempt: %+v (want a 10 s back-off)", list)
	}
	if ins, _ := p.svc.Installations(ctx); !slices.ContainsFunc(ins, func(in Installation) bool { return in.InstallationID == instA && in.PurgePending }) {
		t.Fatalf("the installation's record went before its purge: %+v", ins)
	}

	p.weavy.FailAdmin.Store(false)
	p.advance(10 * time.Second)
	if list := p.purges(t); len(list) != 0 {
		t.Fatalf("purge still pending after Weavy recovered: %+v", list)
	}
	if m := p.members(cloudA, pageA); len(m) != 0 {
		t.Errorf("site A's chat keeps members %v", m)
	}
	if p.weavy.Directory(dirA) || slices.Contains(p.weavy.UserDirectories("ada"), dirA) {
		t.Errorf("site A's directory kept: %v, ada in %v", p.weavy.Directory(dirA), p.weavy.UserDirectories("ada"))
	}
	if n := p.tokenKeys(t, instA); n != 0 {
		t.Errorf("%d Weavy tokens of site A kept", n)
	}
	if got := p.schedulerKeysOf(t, instA); len(got) != 0 || !slices.Contains(p.keys(t), tombstoneKey(instA)) {
		t.Errorf("after the purge: records %q, keys %q", got, p.keys(t))
	}
	// Site B as it was.
	if m := p.members(cloudB, pageB); !slices.Equal(m, []string{"ada"}) || !p.weavy.Directory(dirB) ||
		!slices.Contains(p.weavy.UserDirectories("ada"), dirB) || p.tokenKeys(t, instB) != 1 {
		t.Errorf("site B touched: members %v, directory %v, ada in %v, tokens %d",
			m, p.weavy.Directory(dirB), p.weavy.UserDirectories("ada"), p.tokenKeys(t, instB))
	}
	if got := p.counter(t, "uninstall_purge_attempts_total", map[string]string{"result": "ok"}); got != 1 {
		t.Errorf("ok attempts = %v", got)
	}
}

// A purge stored by a process that stopped before finishing it is resumed
// by the next process on the same store.
func TestPurgeResumesAfterRestart(t *testing.T) {
	p := newPurgeEnv(t, nil)
	p.open(t, instA, cloudA, "ada", pageA)
	p.weavy.FailAdmin.Store(true)
	if err := p.svc.Uninstall(t.Context(), p.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	p.svc.settle()
	p.svc.Close() // the process stops; Weavy recovers meanwhile
	p.weavy.FailAdmin.Store(false)
	if len(p.purges(t)) != 1 {
		t.Fatal("the purge record did not outlive the process")
	}

	var c *chat.Service
	next := testOptions{
		QueueOptions: QueueOptions{KV: p.kv, AppTokens: p.tokens, Now: p.clock.Now},
		After:        p.tm.After,
		PurgerOn: func(*Queue) Purger {
			c = chat.New(p.wc, p.kv, chat.Options{Now: p.clock.Now})
			return c
		},
	}.build()
	defer next.Close()
	p.clock.Advance(DefaultPurgeBackoff) // its back-off, counted on the new process's clock
	p.tm.fire()
	next.purges.wake()
	next.settle()
	if list, _ := next.Purges(t.Context()); len(list) != 0 {
		t.Fatalf("not resumed: %+v", list)
	}
	if m := p.members(cloudA, pageA); len(m) != 0 || p.weavy.Directory(chat.DirectoryName(cloudA)) {
		t.Fatalf("after the resumed purge: members %v, directory %v", m, p.weavy.Directory(chat.DirectoryName(cloudA)))
	}
}

// blockingPurger blocks each purge until released and counts how many run
// at once.
type blockingPurger struct {
	entered chan struct{}
	release chan struct{}
	active  atomic.Int32
	most    atomic.Int32
	runs    atomic.Int32
}

func (b *blockingPurger) PurgeInstallation(ctx context.Context, _ string) error {
	n := b.active.Add(1)
	defer b.active.Add(-1)
	if n > b.most.Load() {
		b.most.Store(n)
	}
	b.runs.Add(1)
	if n > 1 {
		return errors.New("a second purge ran at once") // the test fails; nothing blocks
	}
	b.entered <- struct{}{}
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Two replicas over one store: only the one holding the lock runs the
// purge; neither the uninstall's own job cancelling nor a retried trigger
// stops it.
func TestPurgeRunsOnceAcrossReplicas(t *testing.T) {
	bp := &blockingPurger{entered: make(chan struct{}, 4), release: make(chan struct{})}
	p := newPurgeEnv(t, func(o *testOptions) { o.PurgerOn = nil; o.Purger = bp })
	other := testOptions{QueueOptions: QueueOptions{KV: p.kv, AppTokens: p.tokens, Now: p.clock.Now}, Purger: bp, After: p.tm.After}.build()
	defer other.Close()
	// The other replica's first scan is over before the purge is stored:
	// left to run late, it could take the lock first and run the purge
	// itself, which is right but not the case under test (and its attempt,
	// blocked in the Purger, would keep other.settle below from returning).
	// Parked, it looks again only when woken (no test timer fires here).
	other.settle()
	p.svc.settle()

	if err := p.svc.Uninstall(t.Context(), p.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, "the purge to start", bp.entered)
	// The other replica looks while it runs: the lock keeps it out.
	other.purges.wake()
	other.settle()
	// The tombstone's cancellations, on this replica and as another
	// replica's invalidation does, and Forge retrying the trigger.
	p.svc.Forget(instA)
	if err := p.svc.Uninstall(t.Context(), p.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	p.svc.run.waitIdle()
	if n := bp.runs.Load(); n != 1 {
		t.Fatalf("%d purges started, want 1", n)
	}
	close(bp.release)
	p.svc.settle()
	other.settle()
	if list := p.purges(t); len(list) != 0 || bp.most.Load() != 1 || bp.runs.Load() != 1 {
		t.Fatalf("pending %+v, at most %d at once, %d runs", list, bp.most.Load(), bp.runs.Load())
	}
	if got := p.counter(t, "uninstall_purge_attempts_total", map[string]string{"result": "canceled"}); got != 0 {
		t.Fatalf("the purge was cancelled %v times", got)
	}
}

// gatedKV holds the first scan of the purge records, once it has read
// them, until the test lets it go: a replica whose scan read a purge
// another replica then finishes.
type gatedKV struct {
	store.KV
	armed  atomic.Bool
	read   chan struct{}
	resume chan struct{}
}

func (g *gatedKV) Scan(ctx context.Context, prefix string, fn func(string, []byte) error) error {
	err := g.KV.Scan(ctx, prefix, fn)
	if prefix == purgePrefix && g.armed.CompareAndSwap(true, false) {
		g.read <- struct{}{}
		<-g.resume
	}
	return err
}

// A replica that read a purge record just before another replica finished
// that purge and released its lock does not run it again: it takes the
// free lock, finds the record gone, and lets go.
func TestPurgeDoneMeanwhileIsNotRunAgain(t *testing.T) {
	bp := &blockingPurger{entered: make(chan struct{}, 4), release: make(chan struct{})}
	p := newPurgeEnv(t, func(o *testOptions) { o.PurgerOn = nil; o.Purger = bp })
	gate := &gatedKV{KV: p.kv, read: make(chan struct{}), resume: make(chan struct{})}
	other := testOptions{QueueOptions: QueueOptions{KV: gate, AppTokens: p.tokens, Now: p.clock.Now}, Purger: bp, After: p.tm.After}.build()
	defer other.Close()
	other.settle()
	p.svc.settle()

	if err := p.svc.Uninstall(t.Context(), p.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, "the purge to start", bp.entered)
	gate.armed.Store(true)
	other.purges.wake()
	testwait.Recv(t, "the other replica to read the purge", gate.read)
	// This replica finishes: the record goes, then the lock.
	close(bp.release)
	p.svc.settle()
	if list := p.purges(t); len(list) != 0 || slices.Contains(p.keys(t), purgeLockKey(instA)) {
		t.Fatalf("after the purge: pending %+v, keys %q", list, p.keys(t))
	}
	// The other replica goes on with what it read.
	close(gate.resume)
	other.settle()
	if n := bp.runs.Load(); n != 1 {
		t.Fatalf("the purge ran %d times, want once", n)
	}
	if slices.Contains(p.keys(t), purgeLockKey(instA)) {
		t.Fatal("the other replica kept the lock of a purge that is done")
	}
}

// A lock left by a replica that died is not renewed: it lapses after its
// TTL and another replica takes the purge over.
func TestPurgeLockOfDeadReplicaExpires(t *testing.T) {
	p := newPurgeEnv(t, nil)
	p.open(t, instA, cloudA, "ada", pageA)
	if err := p.kv.Put(t.Context(), purgeLockKey(instA), []byte("dead-replica"), purgeLockTTL); err != nil {
		t.Fatal(err)
	}
	calls := p.weavy.AdminCalls()
	if err := p.svc.Uninstall(t.Context(), p.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	p.svc.settle()
	if list := p.purges(t); len(list) != 1 || !list[0].Running || p.weavy.AdminCalls() != calls {
		t.Fatalf("ran under another replica's lock: %+v, %d Weavy calls", list, p.weavy.AdminCalls()-calls)
	}
	p.advance(purgeLockTTL - time.Second)
	if len(p.purges(t)) != 1 {
		t.Fatal("ran before the lock lapsed")
	}
	p.advance(2 * time.Second)
	if list := p.purges(t); len(list) != 0 || len(p.members(cloudA, pageA)) != 0 {
		t.Fatalf("after the lock lapsed: %+v, members %v", list, p.members(cloudA, pageA))
	}
}

// A pass of the purge asked for while an attempt runs (PurgeAgain: a write
// that came late) keeps the record that attempt would have deleted, and
// another attempt runs; asked for once the purge is done, it stores a purge
// again.
func TestPurgeAgain(t *testing.T) {
	bp := &blockingPurger{entered: make(chan struct{}, 4), release: make(chan struct{}, 4)}
	p := newPurgeEnv(t, func(o *testOptions) { o.PurgerOn = nil; o.Purger = bp })
	if err := p.svc.Uninstall(t.Context(), p.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, "the first pass to start", bp.entered)
	if err := p.svc.PurgeAgain(t.Context(), instA); err != nil {
		t.Fatal(err)
	}
	bp.release <- struct{}{}
	testwait.Recv(t, "a second pass, asked for during the first", bp.entered)
	bp.release <- struct{}{}
	p.svc.settle()
	if list := p.purges(t); len(list) != 0 || bp.runs.Load() != 2 {
		t.Fatalf("after two passes: pending %+v, %d runs", list, bp.runs.Load())
	}
	if got := p.counter(t, "uninstall_purge_attempts_total", map[string]string{"result": "again"}); got != 1 {
		t.Errorf("again attempts = %v; want 1", got)
	}

	if err := p.svc.PurgeAgain(t.Context(), instA); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, "a third pass, asked for once done", bp.entered)
	bp.release <- struct{}{}
	p.svc.settle()
	if list := p.purges(t); len(list) != 0 || bp.runs.Load() != 3 {
		t.Fatalf("after the third pass: pending %+v, %d runs", list, bp.runs.Load())
	}
}

// lateUninstalls is the chat's view of a Service made after the chat.
type lateUninstalls struct{ svc *atomic.Pointer[Service] }

func (l lateUninstalls) Uninstalled(ctx context.Context, inst string) (bool, error) {
	return l.svc.Load().Uninstalled(ctx, inst)
}

func (l lateUninstalls) PurgeAgain(ctx context.Context, inst string) error {
	return l.svc.Load().PurgeAgain(ctx, inst)
}

// gatedWeavy holds the chat's next PutMember, once armed, until released:
// an open between its lease and its membership.
type gatedWeavy struct {
	chat.Weavy
	armed            atomic.Bool
	entered, release chan struct{}
}

func (g *gatedWeavy) PutMember(ctx context.Context, appID int64, user string, access weavy.Access) error {
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Weavy.PutMember(ctx, appID, user, access)
}

// A chat open in flight at the uninstall: it wrote its lease, then the
// uninstall's purge ran whole, then it added its member. It finds the
// tombstone, answers ErrUninstalled and asks for another pass, which removes
// the member and every record the open wrote. Before, the member stayed in
// the chat for good (no lease record: no prune; no purge pending).
func TestOpenRacingItsUninstallLeavesNothing(t *testing.T) {
	gw := &gatedWeavy{entered: make(chan struct{}), release: make(chan struct{})}
	var svc atomic.Pointer[Service]
	var c *chat.Service
	var b *weavy.Broker
	p := newPurgeEnv(t, func(o *testOptions) {
		o.PurgerOn = func(q *Queue) Purger {
			gw.Weavy = o.Weavy.(*weavy.Client)
			c = chat.New(gw, o.KV, chat.Options{Now: o.Now, Uninstalls: lateUninstalls{&svc}})
			b = weavy.NewBroker(o.Weavy.(*weavy.Client), o.KV, weavy.BrokerOptions{Now: o.Now, Observer: q})
			return joined{c, b}
		}
	})
	p.chat, p.broker = c, b
	svc.Store(p.svc)
	ctx := t.Context()
	p.open(t, instA, cloudA, "ada", pageA)

	gw.armed.Store(true)
	opened := make(chan error, 1)
	go func() {
		_, err := p.chat.Open(ctx, chat.Request{InstallationID: instA, CloudID: cloudA, User: "bob",
			Target: chat.Target{Kind: chat.KindPage, ID: pageA}, Check: func(context.Context) (bool, error) { return true, nil }})
		opened <- err
	}()
	testwait.Recv(t, "bob's open to reach its membership", gw.entered)
	if err := p.svc.Uninstall(ctx, p.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	p.svc.settle()
	if list := p.purges(t); len(list) != 0 || len(p.members(cloudA, pageA)) != 0 {
		t.Fatalf("the first pass: pending %+v, members %v", list, p.members(cloudA, pageA))
	}

	close(gw.release)
	if err := testwait.Recv(t, "bob's open to end", opened); !errors.Is(err, chat.ErrUninstalled) {
		t.Fatalf("bob's open = %v; want ErrUninstalled", err)
	}
	p.svc.settle()
	if m := p.members(cloudA, pageA); len(m) != 0 {
		t.Errorf("members left in the uninstalled site's chat: %v", m)
	}
	if p.weavy.Directory(chat.DirectoryName(cloudA)) {
		t.Error("the uninstalled site's directory is back")
	}
	for _, k := range p.keys(t) {
		if strings.HasPrefix(k, "chat/") && (belongsTo(k, instA) || strings.Contains(k, cloudA)) {
			t.Errorf("left behind: %s", k)
		}
	}
	if list := p.purges(t); len(list) != 0 {
		t.Errorf("purges pending: %+v", list)
	}
}
