package chat

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/weavy"
)

// purgeParallel bounds the Weavy calls an uninstall makes at once.
const purgeParallel = 8

// PurgeInstallation undoes everything this server did in Weavy and the store
// for an uninstalled installation: every membership it added is removed, the
// site-wide chat is closed, its users leave the site's directory (the
// directory is deleted unless another installation on the same site, such as
// another Forge environment, still uses it), and its records go. What fails
// is kept and reported, so the next attempt of the scheduler's durable
// uninstall purge (or `forge-remote weavy lockdown --apply`) finishes it:
// each step is idempotent, and the records it needs (the site, the apps, the
// leases, the directory's users) go only once their Weavy side is done.
func (s *Service) PurgeInstallation(ctx context.Context, inst string) error {
	if inst == "" {
		return errors.New("chat: purge: empty installation id")
	}
	s.ForgetInstallation(inst)
	cloudID, ok, err := s.purgedSite(ctx, inst)
	if err != nil {
		return fmt.Errorf("chat: purge: %w", err)
	}
	if !ok {
		return nil // this installation never opened a chat, or all is gone
	}
	dir := DirectoryName(string(cloudID))
	// Leave the site first: from here on no purge, prune or open of another
	// installation counts this one as sharing the site's apps, members and
	// directory. Two installations of a site purged at once each leave
	// before they look, so the later to look sees neither and removes what
	// they shared (each looking first, each saw the other and both kept
	// the directory). The chat/onsite/ record goes before the list, so that
	// a site listed from those records (installationsOn) cannot list this
	// one again.
	if err := s.kv.Delete(ctx, onSiteKey(string(cloudID), inst)); err != nil && !errNotFound(err) {
		return fmt.Errorf("chat: purge: %w", err)
	}
	if err := s.unlistOnSite(ctx, string(cloudID), inst); err != nil {
		return fmt.Errorf("chat: purge: %w", err)
	}
	insts, err := s.installationsOn(ctx, string(cloudID))
	if err != nil {
		return fmt.Errorf("chat: purge: %w", err)
	}
	// Another installation on the same site (another Forge environment)
	// shares its apps and directory: they stay as they are for it. One
	// listed but purged already shares nothing, and leaves the list with
	// this one.
	others, gone, err := s.othersOnSite(ctx, inst, insts)
	if err != nil {
		return fmt.Errorf("chat: purge: %w", err)
	}
	shared := len(others) > 0
	errs := []error{s.purgeLeases(ctx, inst, others)}
	errs = append(errs, s.purgeApps(ctx, inst, others)...)
	errs = append(errs, s.purgeDirectory(ctx, inst, string(cloudID), dir, shared)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("chat: purge: %w", err)
	}
	// The purged installations still listed, then the site record a retry
	// starts from.
	if len(gone) > 0 {
		if err := s.unlistOnSite(ctx, string(cloudID), gone...); err != nil {
			return fmt.Errorf("chat: purge: %w", err)
		}
	}
	if err := s.kv.Delete(ctx, siteKey(inst)); err != nil && !errNotFound(err) {
		return fmt.Errorf("chat: purge: %w", err)
	}
	s.ForgetInstallation(inst)
	s.log.Info("chat: installation's memberships and directory removed", zap.String("installation_id", inst))
	return nil
}

// purgedSite is the site inst is pinned to: its site record, or, once that
// is gone (a pass of the purge finished, then an open in flight at the
// uninstall added its member and recorded its app again for the next pass),
// the site an app record of inst names. ok is false when there is neither.
func (s *Service) purgedSite(ctx context.Context, inst string) (cloudID []byte, ok bool, err error) {
	cloudID, err = s.kv.Get(ctx, siteKey(inst))
	switch {
	case err == nil:
		return cloudID, true, nil
	case !errNotFound(err):
		return nil, false, fmt.Errorf("reading the site: %w", err)
	}
	errFound := errors.New("found")
	err = s.kv.Scan(ctx, appsOf(inst), func(_ string, v []byte) error {
		if rec, ok := decodeApp(v); ok {
			if c, _, ok := parseAppUID(rec.UID); ok {
				cloudID = []byte(c)
				return errFound
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errFound):
		return cloudID, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("listing apps: %w", err)
	}
	return nil, false, nil
}

// scanKeys lists the keys and values under prefix.
func (s *Service) scanKeys(ctx context.Context, prefix string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.kv.Scan(ctx, prefix, func(k string, v []byte) error {
		out[k] = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// purgeLeases removes every membership the installation's leases record
// unless one of others (the installations staying on its site) leases it
// too, purgeParallel at a time.
func (s *Service) purgeLeases(ctx context.Context, inst string, others []string) error {
	leases, err := s.scanKeys(ctx, leasesOf(inst))
	if err != nil {
		return fmt.Errorf("listing leases: %w", err)
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, purgeParallel)
	)
	for key, v := range leases {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := func() error {
				if l, ok := decodeLease(v); ok {
					elsewhere, err := s.leasedOnAny(ctx, others, l.AppUID, l.User, s.now())
					if err != nil {
						return err
					}
					if elsewhere {
						return s.kv.Delete(ctx, key) // another installation on the site still gives it
					}
					if err := s.w.DeleteMember(ctx, l.AppID, l.User); err != nil {
						return err
					}
					s.removed.WithLabelValues("uninstall").Inc()
				}
				return s.kv.Delete(ctx, key)
			}()
			if err != nil && !errNotFound(err) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// purgeApps closes the site-wide chat (open to a directory about to go)
// unless another installation on the site still serves it, removes from each
// page and space chat every member no installation on the site leases, and
// forgets the installation's apps.
func (s *Service) purgeApps(ctx context.Context, inst string, others []string) []error {
	shared := len(others) > 0
	apps, err := s.scanKeys(ctx, appsOf(inst))
	if err != nil {
		return []error{fmt.Errorf("listing apps: %w", err)}
	}
	var errs []error
	for key, v := range apps {
		rec, ok := decodeApp(v)
		_, t, parsed := parseAppUID(rec.UID)
		if ok && parsed && t.Kind == KindSite && !shared {
			closed := weavy.AppSpec{Type: "chat", Name: Name(t), Access: weavy.AccessNone}
			if _, err := s.w.UpsertApp(ctx, rec.UID, closed); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if ok && parsed && t.Kind != KindSite {
			// The leases may not name every member any more (a lease record
			// expires Lease + leaseMargin after its renewal, and a purge
			// delayed by a Weavy outage can start after that): every member
			// no installation on the site still leases goes.
			if _, err := s.removeUnleased(ctx, others, rec.UID, rec.ID, "uninstall", nil); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := s.kv.Delete(ctx, key); err != nil && !errNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errs
}

// purgeDirectory takes the installation's users out of the site's directory
// and deletes it when no other installation is on the same site.
func (s *Service) purgeDirectory(ctx context.Context, inst, cloudID, dir string, shared bool) []error {
	users, err := s.scanKeys(ctx, inDirsOf(inst))
	if err != nil {
		return []error{fmt.Errorf("listing directory users: %w", err)}
	}
	var errs []error
	for key, uid := range users {
		if !shared {
			if err := s.removeUserDirectory(ctx, string(uid), dir); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := s.kv.Delete(ctx, key); err != nil && !errNotFound(err) {
			errs = append(errs, err)
		}
	}
	if shared || len(errs) > 0 {
		return errs
	}
	// Deleting the directory takes every user out of it in Weavy.
	if err := s.w.DeleteDirectory(ctx, dir); err != nil {
		return []error{err}
	}
	if err := s.kv.Delete(ctx, dirKey(cloudID)); err != nil && !errNotFound(err) {
		return []error{err}
	}
	s.mu.Lock()
	delete(s.dirs, s.keys.dir(cloudID))
	s.mu.Unlock()
	return nil
}

// ForgetInstallation drops what this process holds in memory for inst
// (another replica purged it).
func (s *Service) ForgetInstallation(inst string) {
	// Entries carry a 32-bit tag of their installation: rarely, another
	// installation's go too, and are read back from the store.
	tag := s.keys.tag(inst)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.members {
		if e.inst == tag {
			delete(s.members, k)
		}
	}
	for k, e := range s.apps {
		if e.inst == tag {
			delete(s.apps, k)
		}
	}
	for k, t := range s.inDir {
		if t == tag {
			delete(s.inDir, k)
		}
	}
	delete(s.sites, s.keys.site(inst))
	// The site's directory may have gone with it: read the store again.
	clear(s.dirs)
}

// ForgetAll drops everything held in memory (a replica that may have missed
// another's purge). Directories are dropped too: one may have been deleted.
func (s *Service) ForgetAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.members)
	clear(s.apps)
	clear(s.inDir)
	clear(s.sites)
	clear(s.dirs)
}
