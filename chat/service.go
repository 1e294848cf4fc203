package chat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/forge-remote/forge-remote/internal/ids"
	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// Weavy is what the service needs of Weavy's API; *weavy.Client is one. Every
// call is made with the API key, never a user's token.
type Weavy interface {
	UpsertApp(ctx context.Context, uid string, spec weavy.AppSpec) (weavy.App, error)
	PutMember(ctx context.Context, appID int64, user string, access weavy.Access) error
	DeleteMember(ctx context.Context, appID int64, user string) error
	ListMembers(ctx context.Context, appID int64, skip, take int) (weavy.Page[weavy.Member], error)
	CreateDirectory(ctx context.Context, name string) error
	DeleteDirectory(ctx context.Context, name string) error
	UpsertUser(ctx context.Context, uid string, p weavy.Profile) error
}

// Options configures a Service.
type Options struct {
	// Lease is how long an open gives a membership (CHAT_LEASE); 0 (or a
	// negative value) means DefaultLease.
	Lease time.Duration
	// Recheck is how long a verdict of Request.Check is kept for one
	// (installation, user, target) (CHAT_RECHECK): an allowed open within it
	// asks Confluence nothing, a denied one is refused from memory. 0 asks
	// on every open; a negative value counts as 0.
	Recheck time.Duration
	// MaxEntries bounds the memberships and verdicts held in memory; 0 (or
	// a negative value) means DefaultMaxEntries. Past it, what is stale
	// goes first, then arbitrary entries: an evicted entry costs a store
	// read or a Confluence check, never a wrong answer.
	MaxEntries int
	// MaxApps bounds the provisioned apps' ids held in memory; 0 (or a
	// negative value) means DefaultMaxApps. Past it, arbitrary entries go:
	// an evicted app is read back from the store, never provisioned again.
	MaxApps int
	// MaxUsers bounds the (installation, user) pairs memory knows to be in
	// the site's directory; 0 (or a negative value) means DefaultMaxUsers.
	// Past it, arbitrary entries go: an evicted one costs a store read.
	MaxUsers int
	// MaxSites bounds the installations' sites and the sites' directories
	// held in memory, each; 0 (or a negative value) means DefaultMaxSites.
	// Past it, arbitrary entries go: an evicted one costs store reads.
	MaxSites int
	// Uninstalls, when set (the scheduler), is asked by each open that
	// writes, before and after its writes, whether the installation was
	// uninstalled (uninstalledMeanwhile says why both).
	Uninstalls Uninstalls
	Now        func() time.Time // nil: time.Now
	Logger     *zap.Logger      // nil: no logs
	Registerer prometheus.Registerer
}

// DefaultLease: a page chat membership lasts this long after the last open.
const DefaultLease = 12 * time.Hour

// DefaultRecheck is CHAT_RECHECK's default.
const DefaultRecheck = 10 * time.Minute

// Default bounds of what memory holds (see memory.go for what an entry
// costs: together, full, about 12 MB). CHAT_CACHE_ENTRIES sets the first
// three. They are sized so that the image's GOMEMLIMIT (40 MiB) holds them
// full beside 100,000 users' cached tokens with room to spare: a live heap
// near GOMEMLIMIT makes the collector run back to back (measured with the
// earlier 200,000: after 200,000 page chats the token answer cost 190 µs of
// CPU instead of 84 with room).
const (
	// DefaultMaxEntries bounds the (installation, user, target) entries:
	// the distinct opens of about 80 a second over CHAT_RECHECK's default
	// 10 minutes.
	DefaultMaxEntries = 50_000
	// DefaultMaxApps bounds the provisioned apps' ids.
	DefaultMaxApps = 50_000
	// DefaultMaxUsers bounds the (installation, user) directory assignments.
	DefaultMaxUsers = 50_000
	// DefaultMaxSites bounds the installations' sites, and the sites'
	// directories.
	DefaultMaxSites = 50_000
)

// renewFraction: an open renews the stored lease only when the renewal held
// is older than Lease/renewFraction, so warm opens cost no store write.
const renewFraction = 4

// Request is one open: the installation and site from the FIT, the user's
// Weavy uid and the target the FIT names.
type Request struct {
	InstallationID string
	CloudID        string
	User           string // Weavy uid
	Target         Target
	// Check asks Confluence, as the user, whether they can view Target:
	// (true, nil) they can; (false, nil) they cannot; an error, nobody
	// knows. Every target but KindSite needs it: without, the open is
	// refused.
	Check func(ctx context.Context) (bool, error)
}

// ErrNoAccess is returned when Confluence says the user cannot view the
// target: the open is refused, and a membership the user held is removed.
var ErrNoAccess = errors.New("chat: the user cannot view this page or space")

// ErrUninstalled is returned by an open of an installation uninstalled
// while the open ran: what it wrote is left to one more pass of the purge.
var ErrUninstalled = errors.New("chat: the app was uninstalled from this site")

// Uninstalls is what an open asks of the uninstalls (the scheduler's
// tombstones and durable purges).
type Uninstalls interface {
	// Uninstalled reports whether inst was uninstalled.
	Uninstalled(ctx context.Context, inst string) (bool, error)
	// PurgeAgain asks for one more pass of inst's purge.
	PurgeAgain(ctx context.Context, inst string) error
}

// Chat is the answer: what the Custom UI mounts.
type Chat struct {
	AppID int64
	UID   string
	Name  string
}

// Service opens chats. It is safe for concurrent use.
type Service struct {
	w          Weavy
	kv         store.KV
	lease      time.Duration
	recheck    int64 // ns
	maxEntries int
	maxApps    int
	maxUsers   int
	maxSites   int
	now        func() time.Time
	log        *zap.Logger
	keys       keyer
	uninstalls Uninstalls // nil: none asked

	// What memory holds, each map bounded (memory.go).
	mu      sync.RWMutex
	members map[memKey]memberEntry // memberships renewed and verdicts given recently
	apps    map[memKey]appEntry    // provisioned apps
	dirs    map[memKey]struct{}    // site: its directory exists
	inDir   map[memKey]uint32      // (installation, user) put in the site's directory → installation tag
	sites   map[memKey]memKey      // installation → its site (keyer.siteCloud), as recorded

	lastSweep int64 // unix ns

	opens   *prometheus.CounterVec
	removed *prometheus.CounterVec
	checks  *prometheus.CounterVec
	evicted evictions // chat_memory_evictions_total, by map

	memberFlights, appFlights, dirFlights singleflight.Group
}

// memberEntry is what memory holds of one (installation, site, target,
// user): the membership, and Confluence's last verdict on the target.
type memberEntry struct {
	appID   int64  // 0: no membership known
	renewed int64  // unix ns of the last renewal this process wrote or read
	checked int64  // unix ns when the verdict was asked; 0: none held
	inst    uint32 // tag of the installation, for ForgetInstallation
	allowed bool   // the verdict
}

// verdict reports the verdict e holds at now, if it is fresh.
func (e memberEntry) verdict(now, recheck int64) (allowed, fresh bool) {
	return e.allowed, e.checked != 0 && now-e.checked < recheck
}

// New returns a Service provisioning through w and keeping its records in kv.
func New(w Weavy, kv store.KV, o Options) *Service {
	s := &Service{
		w: w, kv: kv, lease: cmp.Or(max(o.Lease, 0), DefaultLease), now: o.Now, log: o.Logger,
		recheck:    int64(max(o.Recheck, 0)),
		maxEntries: cmp.Or(max(o.MaxEntries, 0), DefaultMaxEntries),
		maxApps:    cmp.Or(max(o.MaxApps, 0), DefaultMaxApps),
		maxUsers:   cmp.Or(max(o.MaxUsers, 0), DefaultMaxUsers),
		maxSites:   cmp.Or(max(o.MaxSites, 0), DefaultMaxSites),
		keys:       newKeyer(),
		uninstalls: o.Uninstalls,
		members:    make(map[memKey]memberEntry),
		apps:       make(map[memKey]appEntry),
		dirs:       make(map[memKey]struct{}),
		inDir:      make(map[memKey]uint32),
		sites:      make(map[memKey]memKey),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.opens, s.removed, s.checks = newMetrics(o.Registerer)
	s.registerMemory(o.Registerer)
	return s
}

// Lease is the membership lease length.
func (s *Service) Lease() time.Duration { return s.lease }

// Open returns the chat of r.Target for r.User, provisioning the app and the
// membership as needed, once r.Check has said the user can view the target
// (the site-wide chat needs no check). A warm open (a verdict within
// Recheck, a membership renewed within Lease/4) costs no Confluence, store
// or Weavy call. A denial is ErrNoAccess, and removes the user's membership
// of the target's chat, if they held one.
func (s *Service) Open(ctx context.Context, r Request) (Chat, error) {
	if err := r.check(); err != nil {
		s.opens.WithLabelValues("refused").Inc()
		return Chat{}, err
	}
	k := s.keys.member(r.InstallationID, r.CloudID, r.Target, r.User)
	now := s.now().UnixNano()
	s.mu.RLock()
	e, ok := s.members[k]
	s.mu.RUnlock()
	allowed, fresh := e.verdict(now, s.recheck)
	if r.Target.Kind == KindSite {
		allowed, fresh = true, true
	}
	switch {
	case ok && fresh && !allowed:
		s.opens.WithLabelValues("denied").Inc()
		return Chat{}, ErrNoAccess
	case ok && fresh && e.appID > 0 && now-e.renewed < int64(s.lease/renewFraction):
		s.opens.WithLabelValues("warm").Inc()
		return s.answer(r, e.appID), nil
	}
	ch := s.memberFlights.DoChan(r.InstallationID+"\x00"+r.CloudID+"\x00"+string(r.Target.Kind)+r.Target.ID+"\x00"+r.User, func() (any, error) {
		// Detached: the callers that joined still wait for it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		return s.open(fctx, r, k)
	})
	select {
	case res := <-ch:
		if errors.Is(res.Err, ErrNoAccess) {
			s.opens.WithLabelValues("denied").Inc()
			return Chat{}, res.Err
		}
		if res.Err != nil {
			s.opens.WithLabelValues("error").Inc()
			return Chat{}, res.Err
		}
		return s.answer(r, res.Val.(int64)), nil
	case <-ctx.Done():
		return Chat{}, fmt.Errorf("chat: open: %w", ctx.Err())
	}
}

// access asks r.Check unless memory holds a fresh verdict (an open that
// joined a flight late finds the first one's), records the verdict, and on a
// denial removes the user's membership.
func (s *Service) access(ctx context.Context, r Request, k memKey) error {
	if r.Target.Kind == KindSite {
		return nil
	}
	now := s.now().UnixNano()
	s.mu.RLock()
	e, ok := s.members[k]
	s.mu.RUnlock()
	if allowed, fresh := e.verdict(now, s.recheck); ok && fresh {
		if !allowed {
			return ErrNoAccess
		}
		return nil
	}
	allowed, err := r.Check(ctx)
	if err != nil {
		s.checks.WithLabelValues("error").Inc()
		return err
	}
	if allowed {
		s.checks.WithLabelValues("allowed").Inc()
		if s.recheck > 0 {
			s.mu.Lock()
			e := s.members[k]
			e.checked, e.allowed, e.inst = now, true, s.keys.tag(r.InstallationID)
			s.putLocked(k, e, now)
			s.mu.Unlock()
		}
		return nil
	}
	s.checks.WithLabelValues("denied").Inc()
	s.mu.Lock()
	if s.recheck > 0 {
		s.putLocked(k, memberEntry{checked: now, inst: s.keys.tag(r.InstallationID)}, now)
	} else {
		delete(s.members, k)
	}
	s.mu.Unlock()
	if err := s.removeDenied(ctx, r); err != nil {
		return fmt.Errorf("%w (removing the membership failed: %w)", ErrNoAccess, err)
	}
	return ErrNoAccess
}

func (r Request) check() error {
	switch {
	case r.InstallationID == "" || r.User == "":
		return errors.New("chat: open: no installation or user")
	case !ids.IsUUID(r.CloudID):
		return fmt.Errorf("%w: the site's cloudId is not a UUID", ErrBadTarget)
	}
	if r.Target.Kind != KindSite && r.Check == nil {
		return errors.New("chat: open: no access check for a page or space chat")
	}
	return r.Target.check()
}

func (s *Service) answer(r Request, appID int64) Chat {
	return Chat{AppID: appID, UID: AppUID(r.CloudID, r.Target), Name: Name(r.Target)}
}

// open is the slow path: the app (memory, store, else provisioned), the
// user in the site's directory, and the lease renewed (a membership added
// in Weavy only when the store does not hold a live one).
func (s *Service) open(ctx context.Context, r Request, k memKey) (int64, error) {
	if err := s.access(ctx, r, k); err != nil {
		return 0, err
	}
	s.mu.RLock()
	e, ok := s.members[k]
	s.mu.RUnlock()
	now := s.now()
	if ok && e.appID > 0 && now.UnixNano()-e.renewed < int64(s.lease/renewFraction) {
		// Re-checked, and the membership is still warm: nothing to renew.
		s.opens.WithLabelValues("rechecked").Inc()
		return e.appID, nil
	}
	// Uninstalled already (a FIT minted before the uninstall, valid a few
	// minutes more): nothing is written, and no purge pass asked for.
	if gone, err := s.uninstalled(ctx, r.InstallationID); err != nil || gone {
		return 0, cmp.Or(err, ErrUninstalled)
	}
	if err := s.checkSite(ctx, r.InstallationID, r.CloudID); err != nil {
		return 0, err
	}
	appID, cold, err := s.ensureApp(ctx, r)
	if err != nil {
		return 0, err
	}
	if err := s.ensureInDirectory(ctx, r.InstallationID, r.CloudID, r.User); err != nil {
		return 0, err
	}
	result := "renewed"
	if cold {
		result = "cold"
	}
	// The site-wide chat is open to the site's directory: no membership.
	renewed := now
	if r.Target.Kind != KindSite {
		var added bool
		renewed, added, err = s.renew(ctx, r, appID, now)
		if err != nil {
			return 0, err
		}
		if added && !cold {
			result = "joined"
		}
	}
	if err := s.uninstalledMeanwhile(ctx, r, appID); err != nil {
		return 0, err
	}
	s.mu.Lock()
	e = s.members[k] // the verdict access recorded, if kept
	e.appID, e.renewed, e.inst = appID, renewed.UnixNano(), s.keys.tag(r.InstallationID)
	s.putLocked(k, e, now.UnixNano())
	s.mu.Unlock()
	s.opens.WithLabelValues(result).Inc()
	return appID, nil
}

// uninstalledMeanwhile is asked once an open has written what it writes
// (site, app, directory, lease and membership): an uninstall stores its
// tombstone before its purge looks, and the open looks for the tombstone
// only after writing, so either the purge saw the writes or the open sees
// the tombstone. Then the open records its app again (a pass may have
// deleted the record, and with it the site record, before the open added
// its member: the app names the site and leads the next pass to the
// member) and asks for one more pass of the purge. ErrUninstalled then.
func (s *Service) uninstalledMeanwhile(ctx context.Context, r Request, appID int64) error {
	inst := r.InstallationID
	gone, err := s.uninstalled(ctx, inst)
	if err != nil || !gone {
		return err
	}
	s.ForgetInstallation(inst)
	uid := AppUID(r.CloudID, r.Target)
	if err := s.kv.Put(ctx, appKey(inst, uid), appRecord{ID: appID, UID: uid}.encode(), 0); err != nil {
		return fmt.Errorf("chat: open: recording the app for the purge: %w", err)
	}
	if err := s.uninstalls.PurgeAgain(ctx, inst); err != nil {
		return fmt.Errorf("chat: open: %w", err)
	}
	logctx.Logger(ctx, s.log).Info("chat open of an installation uninstalled meanwhile; its purge runs again",
		zap.String("installation_id", inst))
	return ErrUninstalled
}

// uninstalled asks s.uninstalls (none: false) whether inst was uninstalled.
func (s *Service) uninstalled(ctx context.Context, inst string) (bool, error) {
	if s.uninstalls == nil {
		return false, nil
	}
	gone, err := s.uninstalls.Uninstalled(ctx, inst)
	if err != nil {
		return false, fmt.Errorf("chat: open: %w", err)
	}
	return gone, nil
}

// putLocked stores e under k, sweeping first when it is due or when memory
// holds MaxEntries. s.mu is held.
func (s *Service) putLocked(k memKey, e memberEntry, now int64) {
	if _, ok := s.members[k]; !ok && len(s.members) >= s.maxEntries {
		s.lastSweep = 0 // full: sweep now
	}
	s.sweepLocked(now)
	// Still full of live entries: arbitrary ones go, an eighth at a time.
	putBounded(s.members, s.maxEntries, k, e, s.evicted.members)
}

// sweepLocked drops, at most every Recheck (or Lease/4, if shorter), the
// entries memory no longer vouches for: neither a membership renewed within
// Lease/4 nor a fresh verdict. Memory follows the active users. s.mu is held.
func (s *Service) sweepLocked(now int64) {
	warm := int64(s.lease / renewFraction)
	every := warm
	if s.recheck > 0 {
		every = min(every, s.recheck)
	}
	if now-s.lastSweep < every {
		return
	}
	s.lastSweep = now
	for k, e := range s.members {
		if _, fresh := e.verdict(now, s.recheck); !fresh && (e.appID == 0 || now-e.renewed >= warm) {
			delete(s.members, k)
		}
	}
}
