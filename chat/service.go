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
	Lease      time.Duration
	Now        func() time.Time // nil: time.Now
	Logger     *zap.Logger      // nil: no logs
	Registerer prometheus.Registerer
}

// DefaultLease: a page chat membership lasts this long after the last open.
const DefaultLease = 12 * time.Hour

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
}

// Chat is the answer: what the Custom UI mounts.
type Chat struct {
	AppID int64
	UID   string
	Name  string
}

// Service opens chats. It is safe for concurrent use.
type Service struct {
	w     Weavy
	kv    store.KV
	lease time.Duration
	now   func() time.Time
	log   *zap.Logger

	mu      sync.RWMutex
	members map[memberKey]memberEntry // memberships known and recently renewed
	apps    map[appMemKey]int64       // provisioned apps
	dirs    map[string]bool           // cloudID → the site's directory exists
	inDir   map[userMemKey]bool       // user put in the site's directory
	sites   map[string]string         // installation → its site, as recorded

	lastSweep int64 // unix ns

	opens   *prometheus.CounterVec
	removed *prometheus.CounterVec

	memberFlights, appFlights, dirFlights singleflight.Group
}

// appMemKey names an app in memory. The site is part of it: an
// installation is pinned to one site (checkSite), and a warm open must never
// answer one site's app for a FIT naming another.
type appMemKey struct {
	inst  string
	cloud string
	kind  Kind
	id    string
}

type memberKey struct {
	appMemKey
	user string
}

type userMemKey struct{ inst, user string }

type memberEntry struct {
	appID   int64
	renewed int64 // unix ns of the last renewal this process wrote or read
}

// New returns a Service provisioning through w and keeping its records in kv.
func New(w Weavy, kv store.KV, o Options) *Service {
	s := &Service{
		w: w, kv: kv, lease: cmp.Or(max(o.Lease, 0), DefaultLease), now: o.Now, log: o.Logger,
		members: make(map[memberKey]memberEntry),
		apps:    make(map[appMemKey]int64),
		dirs:    make(map[string]bool),
		inDir:   make(map[userMemKey]bool),
		sites:   make(map[string]string),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.opens, s.removed = newMetrics(o.Registerer)
	return s
}

// Lease is the membership lease length.
func (s *Service) Lease() time.Duration { return s.lease }

// Open returns the chat of r.Target for r.User, provisioning the app and the
// membership as needed. A warm open (membership renewed within Lease/4)
// costs no store and no Weavy call.
func (s *Service) Open(ctx context.Context, r Request) (Chat, error) {
	if err := r.check(); err != nil {
		s.opens.WithLabelValues("refused").Inc()
		return Chat{}, err
	}
	k := memberKey{appMemKey{r.InstallationID, r.CloudID, r.Target.Kind, r.Target.ID}, r.User}
	s.mu.RLock()
	e, ok := s.members[k]
	s.mu.RUnlock()
	if ok && s.now().UnixNano()-e.renewed < int64(s.lease/renewFraction) {
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
		if res.Err != nil {
			s.opens.WithLabelValues("error").Inc()
			return Chat{}, res.Err
		}
		return s.answer(r, res.Val.(int64)), nil
	case <-ctx.Done():
		return Chat{}, fmt.Errorf("chat: open: %w", ctx.Err())
	}
}

func (r Request) check() error {
	switch {
	case r.InstallationID == "" || r.User == "":
		return errors.New("chat: open: no installation or user")
	case !ids.IsUUID(r.CloudID):
		return fmt.Errorf("%w: the site's cloudId is not a UUID", ErrBadTarget)
	}
	return r.Target.check()
}

func (s *Service) answer(r Request, appID int64) Chat {
	return Chat{AppID: appID, UID: AppUID(r.CloudID, r.Target), Name: Name(r.Target)}
}

// open is the slow path: the app (memory, store, else provisioned), the
// user in the site's directory, and the lease renewed (a membership added
// in Weavy only when the store does not hold a live one).
func (s *Service) open(ctx context.Context, r Request, k memberKey) (int64, error) {
	now := s.now()
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
	s.mu.Lock()
	s.members[k] = memberEntry{appID: appID, renewed: renewed.UnixNano()}
	s.sweepLocked(now.UnixNano())
	s.mu.Unlock()
	s.opens.WithLabelValues(result).Inc()
	return appID, nil
}

// sweepLocked drops, at most every Lease/4, the memberships memory no longer
// vouches for, so memory follows the active users. s.mu is held.
func (s *Service) sweepLocked(now int64) {
	every := int64(s.lease / renewFraction)
	if now-s.lastSweep < every {
		return
	}
	s.lastSweep = now
	for k, e := range s.members {
		if now-e.renewed >= every {
			delete(s.members, k)
		}
	}
}
