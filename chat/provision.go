package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// memberPage is how many members one list call asks for.
const memberPage = 100

// ensureApp returns r's app id: from memory, else the store, else
// provisioned (cold is then true). One provisioning per app in this process;
// replicas provisioning the same app at once send the same idempotent PUTs.
func (s *Service) ensureApp(ctx context.Context, r Request) (id int64, cold bool, err error) {
	ak := s.keys.app(r.InstallationID, r.CloudID, r.Target)
	s.mu.RLock()
	e, ok := s.apps[ak]
	s.mu.RUnlock()
	if ok {
		return e.id, false, nil
	}
	uid := AppUID(r.CloudID, r.Target)
	v, err, _ := s.appFlights.Do(r.InstallationID+"\x00"+uid, func() (any, error) {
		b, err := s.kv.Get(ctx, appKey(r.InstallationID, uid))
		if err == nil {
			if rec, ok := decodeApp(b); ok {
				return rec.ID, nil
			}
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrSealed) {
			return int64(0), fmt.Errorf("chat: reading the app record: %w", err)
		}
		cold = true
		return s.provision(ctx, r, uid)
	})
	if err != nil {
		return 0, false, err
	}
	id = v.(int64)
	s.mu.Lock()
	putBounded(s.apps, s.maxApps, ak, appEntry{id: id, inst: s.keys.tag(r.InstallationID)}, s.evicted.apps)
	s.mu.Unlock()
	return id, cold, nil
}

// spec is the app as this server wants it: closed to all but its members,
// or, for the site-wide chat, open to the site's directory only.
func spec(cloudID string, t Target) weavy.AppSpec {
	access := weavy.AccessNone
	if t.Kind == KindSite {
		access = weavy.AccessWrite
	}
	return weavy.AppSpec{Type: "chat", Name: Name(t), Access: access, Directory: DirectoryName(cloudID)}
}

// provision is the first provisioning of an app by this server: the PUT
// (re)asserts access and directory whoever created the app before (a user
// token upsert of the guessable uid creates an open app), and every member
// without a current lease is removed: a squatter, or everyone who opened the
// chat when the browser created it.
func (s *Service) provision(ctx context.Context, r Request, uid string) (int64, error) {
	if err := s.ensureDirectory(ctx, r.CloudID); err != nil {
		return 0, err
	}
	app, err := s.w.UpsertApp(ctx, uid, spec(r.CloudID, r.Target))
	if err != nil {
		return 0, err
	}
	insts, err := s.installationsOn(ctx, r.CloudID)
	if err != nil {
		return 0, err
	}
	if _, err := s.removeUnleased(ctx, insts, uid, app.ID, "squatter", nil); err != nil {
		return 0, err
	}
	if err := s.kv.Put(ctx, appKey(r.InstallationID, uid), appRecord{ID: app.ID, UID: uid}.encode(), 0); err != nil {
		return 0, fmt.Errorf("chat: storing the app record: %w", err)
	}
	logctx.Logger(ctx, s.log).Info("chat app provisioned", zap.String("installation_id", r.InstallationID),
		zap.String("app_uid", uid), zap.Int64("app_id", app.ID))
	return app.ID, nil
}

// removeUnleased removes from app appID every member with no current lease
// in the store under any of insts, the installations on its site: two Forge
// environments installed on one site share its apps (the uid names the
// site, not the installation), and one's first provisioning must not drop
// the other's members. Members are listed before leases are read, and an
// open writes its lease before adding the member: a member added meanwhile
// is seen with its lease. report, if set, learns each removal.
func (s *Service) removeUnleased(ctx context.Context, insts []string, uid string, appID int64, reason string,
	report func(user string)) (int, error) {
	var members []weavy.Member
	for skip := 0; ; skip += memberPage {
		page, err := s.w.ListMembers(ctx, appID, skip, memberPage)
		if err != nil {
			return 0, err
		}
		members = append(members, page.Data...)
		if len(page.Data) < memberPage || skip+len(page.Data) >= page.Count {
			break
		}
	}
	now, removed := s.now(), 0
	for _, m := range members {
		if m.UID == "" {
			continue // not one of ours: only users with a uid are made by this server
		}
		live, err := s.leasedOnAny(ctx, insts, uid, m.UID, now)
		if err != nil {
			return removed, err
		}
		if live {
			continue
		}
		if err := s.w.DeleteMember(ctx, appID, m.UID); err != nil {
			return removed, err
		}
		removed++
		s.removed.WithLabelValues(reason).Inc()
		if report != nil {
			report(m.UID)
		}
	}
	return removed, nil
}

// installationsOn lists the installations recorded on the site cloudID: one
// Get of the site's list (chat/sitelist/). A site without one (its
// installations recorded by the previous version, which wrote only their
// chat/onsite/ records, or none recorded) is listed by a prefix Scan of those
// records, as that version did, and the list is written from what the Scan
// found, merged with whatever another replica wrote meanwhile: each site pays
// the Scan once.
func (s *Service) installationsOn(ctx context.Context, cloudID string) ([]string, error) {
	b, err := s.kv.Get(ctx, siteListKey(cloudID))
	switch {
	case err == nil:
		if insts, ok := decodeSiteList(b); ok {
			return insts, nil
		}
		// Unreadable: rewritten from the Scan below.
	case !errNotFound(err):
		return nil, fmt.Errorf("chat: reading the site's installations: %w", err)
	}
	var insts []string
	err = s.kv.Scan(ctx, onSiteOf(cloudID), func(_ string, v []byte) error {
		insts = append(insts, string(v))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chat: listing the site's installations: %w", err)
	}
	if len(insts) == 0 {
		return nil, nil
	}
	return s.listOnSite(ctx, cloudID, insts...)
}

// listOnSite adds insts to the site's list (creating it) and returns the
// list as it now stands.
func (s *Service) listOnSite(ctx context.Context, cloudID string, insts ...string) ([]string, error) {
	var list []string
	err := s.kv.Update(ctx, siteListKey(cloudID), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		cur, ok := decodeSiteList(old)
		list = normalSiteList(append(slices.Clone(cur), insts...))
		if exists && ok && len(list) == len(cur) {
			return nil, 0, store.Keep // a union as long as cur is cur
		}
		return encodeSiteList(list), 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("chat: storing the site's installations: %w", err)
	}
	return list, nil
}

// othersOnSite splits the installations insts listed on a site, but inst,
// into those still recorded there and those whose site record (chat/site/)
// is gone: purged by the previous version, which knew no list, or put back
// in the list by a write racing with their purge (installationsOn's Scan saw
// their chat/onsite/ record just before the purge deleted it). An
// installation is listed only once its site record is written, and the
// purge deletes that record last, so one listed without it has been purged.
func (s *Service) othersOnSite(ctx context.Context, inst string, insts []string) (others, gone []string, err error) {
	for _, other := range insts {
		if other == inst {
			continue
		}
		_, err := s.kv.Get(ctx, siteKey(other))
		switch {
		case err == nil:
			others = append(others, other)
		case errNotFound(err):
			gone = append(gone, other)
		default:
			return nil, nil, fmt.Errorf("chat: reading the site record: %w", err)
		}
	}
	return others, gone, nil
}

// unlistOnSite removes insts from the site's list; the list goes with its
// last installation.
func (s *Service) unlistOnSite(ctx context.Context, cloudID string, insts ...string) error {
	err := s.kv.Update(ctx, siteListKey(cloudID), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if !exists {
			return nil, 0, store.Keep
		}
		cur, ok := decodeSiteList(old)
		left := slices.DeleteFunc(slices.Clone(cur), func(i string) bool { return slices.Contains(insts, i) })
		switch {
		case len(left) == 0:
			return nil, 0, store.Remove
		case ok && len(left) == len(cur):
			return nil, 0, store.Keep
		}
		return encodeSiteList(left), 0, nil
	})
	if err != nil {
		return fmt.Errorf("chat: storing the site's installations: %w", err)
	}
	return nil
}

// leasedOnAny reports whether user holds a current lease on the app uid
// under any of insts.
func (s *Service) leasedOnAny(ctx context.Context, insts []string, uid, user string, now time.Time) (bool, error) {
	for _, inst := range insts {
		b, err := s.kv.Get(ctx, leaseKey(inst, uid, user))
		if errNotFound(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("chat: reading a lease: %w", err)
		}
		if l, ok := decodeLease(b); ok && !l.expired(now, s.lease) {
			return true, nil
		}
	}
	return false, nil
}

// heldElsewhere reports whether user holds a current lease on the app uid
// under another installation on the same site, whose membership a removal
// for inst must leave alone.
func (s *Service) heldElsewhere(ctx context.Context, inst, uid, user string, now time.Time) (bool, error) {
	cloudID, _, ok := parseAppUID(uid)
	if !ok {
		return false, nil
	}
	insts, err := s.installationsOn(ctx, cloudID)
	if err != nil {
		return false, err
	}
	insts = slices.DeleteFunc(insts, func(i string) bool { return i == inst })
	return s.leasedOnAny(ctx, insts, uid, user, now)
}

// ensureDirectory creates the site's Weavy directory once (409: it exists).
func (s *Service) ensureDirectory(ctx context.Context, cloudID string) error {
	dk := s.keys.dir(cloudID)
	s.mu.RLock()
	_, known := s.dirs[dk]
	s.mu.RUnlock()
	if known {
		return nil
	}
	_, err, _ := s.dirFlights.Do(cloudID, func() (any, error) {
		_, err := s.kv.Get(ctx, dirKey(cloudID))
		switch {
		case err == nil:
			return nil, nil
		case !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrSealed):
			return nil, fmt.Errorf("chat: reading the directory record: %w", err)
		}
		if err := s.w.CreateDirectory(ctx, DirectoryName(cloudID)); err != nil {
			return nil, err
		}
		if err := s.kv.Put(ctx, dirKey(cloudID), []byte{1}, 0); err != nil {
			return nil, fmt.Errorf("chat: storing the directory record: %w", err)
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	putBounded(s.dirs, s.maxSites, dk, struct{}{}, s.evicted.dirs)
	s.mu.Unlock()
	return nil
}

// ErrSiteMismatch is wrapped when a FIT's site is not the one its
// installation was first seen on. Forge signs both, so this should never
// happen; if it did, the chat would be another customer's, so it is refused.
var ErrSiteMismatch = fmt.Errorf("%w: the invocation's site is not its installation's", ErrBadTarget)

// checkSite pins an installation to the site it was first seen on (recorded
// for its uninstall too) and refuses any other: the app uid, the directory
// and the user's identity all follow the cloudId, so a FIT pairing one
// site's installation with another site's cloudId would otherwise reach that
// site's chats.
func (s *Service) checkSite(ctx context.Context, inst, cloudID string) error {
	sk, want := s.keys.site(inst), s.keys.siteCloud(cloudID)
	s.mu.RLock()
	known, ok := s.sites[sk]
	s.mu.RUnlock()
	switch {
	case ok && known == want:
		return nil
	case ok:
		return ErrSiteMismatch
	}
	if err := s.recordSite(ctx, inst, cloudID); err != nil {
		return err
	}
	s.mu.Lock()
	putBounded(s.sites, s.maxSites, sk, want, s.evicted.sites)
	s.mu.Unlock()
	return nil
}

// recordSite records inst's site as cloudID, or checks that it is the one
// recorded, and makes sure the site's list has inst. A site recorded already
// (memory evicted it, or another replica or an earlier process wrote it)
// costs store reads only.
//
// The list is made sure of here, once per installation per process (checkSite
// remembers the site), because a replica of the previous version records an
// installation with its chat/onsite/ record alone. One it recorded on a site
// whose list this version had written already (a Forge environment installed
// on the site during a rolling upgrade) is missing from the list until one of
// its opens reaches a replica of this version, which adds it; until then this
// version's provisionings, prunes and denials for the site's other
// installations do not see its leases. Reading the chat/onsite/ records on
// every listing instead would cost the Scan the list is there to save.
func (s *Service) recordSite(ctx context.Context, inst, cloudID string) error {
	b, err := s.kv.Get(ctx, siteKey(inst))
	switch {
	case err == nil && string(b) != cloudID:
		return ErrSiteMismatch
	case err == nil:
		// Recorded; its chat/onsite/ record is there unless a write failed
		// between the two below.
		_, err := s.kv.Get(ctx, onSiteKey(cloudID, inst))
		switch {
		case err == nil:
			return s.listed(ctx, inst, cloudID)
		case !errNotFound(err):
			return fmt.Errorf("chat: reading the site record: %w", err)
		}
		if err := s.kv.Put(ctx, onSiteKey(cloudID, inst), []byte(inst), 0); err != nil {
			return fmt.Errorf("chat: storing the site record: %w", err)
		}
		return s.listed(ctx, inst, cloudID)
	case !errNotFound(err):
		return fmt.Errorf("chat: reading the site record: %w", err)
	}
	var recorded string
	err = s.kv.Update(ctx, siteKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if exists {
			recorded = string(old)
			return nil, 0, store.Keep
		}
		recorded = cloudID
		return []byte(cloudID), 0, nil
	})
	if err != nil {
		return fmt.Errorf("chat: storing the site record: %w", err)
	}
	if recorded != cloudID {
		return ErrSiteMismatch
	}
	if err := s.kv.Put(ctx, onSiteKey(cloudID, inst), []byte(inst), 0); err != nil {
		return fmt.Errorf("chat: storing the site record: %w", err)
	}
	return s.listed(ctx, inst, cloudID)
}

// listed makes sure the site's list has inst, whose chat/onsite/ record is
// written: a site with no list yet gets one from its chat/onsite/ records
// (installationsOn), inst's among them, rather than one naming inst alone,
// which would hide the installations the previous version recorded there.
func (s *Service) listed(ctx context.Context, inst, cloudID string) error {
	insts, err := s.installationsOn(ctx, cloudID)
	if err != nil {
		return err
	}
	if slices.Contains(insts, inst) {
		return nil
	}
	_, err = s.listOnSite(ctx, cloudID, inst)
	return err
}

// leaseMargin is how long a lease record outlives its lease in the store:
// long enough for the hourly prune to find it expired and remove the
// membership through a day of failed runs (Weavy down, triggers lost; 2 h
// lost the membership to a single failed run); after that the store drops
// it whatever happened to the jobs, so no lease record outlives its meaning.
const leaseMargin = 24 * time.Hour

// leaseTTL is the store TTL of a lease record renewed at renewed: the lease
// plus leaseMargin, counted from now.
func (s *Service) leaseTTL(renewed time.Time) time.Duration {
	return max(renewed.Add(s.lease+leaseMargin).Sub(s.now()), time.Second)
}

// renew extends the user's lease on the app, writing the store only when the
// renewal held is older than Lease/4. A membership is added in Weavy when
// the store holds none that is live (added is then true). It returns the
// renewal now in force.
func (s *Service) renew(ctx context.Context, r Request, appID int64, now time.Time) (renewed time.Time, added bool, err error) {
	uid := AppUID(r.CloudID, r.Target)
	key := leaseKey(r.InstallationID, uid, r.User)
	var prev lease
	var had, kept bool
	err = s.kv.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		prev, had = decodeLease(old)
		// An expired lease vouches for nothing: its member may have been
		// removed by a provisioning or another installation's prune, so it
		// is added again rather than assumed.
		had, kept = had && exists && !prev.expired(now, s.lease), false
		switch {
		case had && prev.State == stateActive && prev.AppID == appID && now.Sub(prev.Renewed) < s.lease/renewFraction:
			kept = true
			return nil, 0, store.Keep
		case had && prev.State == stateActive && prev.AppID == appID:
			return lease{State: stateActive, Renewed: now, AppID: appID, AppUID: uid, User: r.User}.encode(), s.leaseTTL(now), nil
		}
		// No live membership known: pending until Weavy has it.
		return lease{State: statePending, Renewed: now, AppID: appID, AppUID: uid, User: r.User}.encode(), s.leaseTTL(now), nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("chat: renewing the lease: %w", err)
	}
	switch {
	case kept:
		return prev.Renewed, false, nil
	case had && prev.State == stateActive && prev.AppID == appID:
		return now, false, nil
	}
	if err := s.w.PutMember(ctx, appID, r.User, weavy.AccessWrite); err != nil {
		return time.Time{}, false, err
	}
	err = s.kv.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		l, ok := decodeLease(old)
		if !exists || !ok || l.State != statePending {
			return nil, 0, store.Keep // pruned or renewed meanwhile
		}
		l.State = stateActive
		return l.encode(), s.leaseTTL(l.Renewed), nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("chat: recording the membership: %w", err)
	}
	return now, true, nil
}
