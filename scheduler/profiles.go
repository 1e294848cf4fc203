package scheduler

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

const (
	// resyncAfter: a profile synced longer ago is synced again on a scheduled run.
	resyncAfter = 24 * time.Hour
	// userRetention: a user with no first mint for this long leaves the sync
	// set (the record expires in the store).
	userRetention = 30 * 24 * time.Hour
	// maxSyncPerRun bounds the Confluence calls of one run; the rest wait
	// for the next hour, oldest first.
	maxSyncPerRun = 100
	// holdOffMin is how long profile syncs of an installation pause after
	// Confluence answered 429 or 5xx (past the client's own retries); a
	// longer Retry-After is honoured, up to holdOffMax.
	holdOffMin = 5 * time.Minute
	holdOffMax = 24 * time.Hour
)

// userRecord is one Weavy user of an installation as the profile sync knows it.
type userRecord struct {
	UID        string
	AddedAt    time.Time
	LastMintAt time.Time
	SyncedAt   time.Time
}

// userRecordV1 starts a user record in binary form: the tag, then AddedAt,
// LastMintAt and SyncedAt as big-endian unix nanoseconds (noTime for none).
// 25 bytes: the key holds the uid.
const userRecordV1 byte = 1

// noTime stands for the zero time in a binary user record.
const noTime = math.MinInt64

func (u userRecord) encode() []byte {
	b := make([]byte, 1, 1+3*8)
	b[0] = userRecordV1
	for _, t := range []time.Time{u.AddedAt, u.LastMintAt, u.SyncedAt} {
		n := int64(noTime)
		if !t.IsZero() {
			n = t.UnixNano()
		}
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return b
}

// decode reads a stored record into u, whose UID the caller set from the
// key. It reports whether v was readable.
func (u *userRecord) decode(v []byte) bool {
	if len(v) != 1+3*8 || v[0] != userRecordV1 {
		return false
	}
	for i, t := range []*time.Time{&u.AddedAt, &u.LastMintAt, &u.SyncedAt} {
		*t = time.Time{}
		if n := int64(binary.BigEndian.Uint64(v[1+8*i:])); n != noTime {
			*t = time.Unix(0, n)
		}
	}
	return true
}

func (u userRecord) ttl(now time.Time) time.Duration {
	return max(u.LastMintAt.Add(userRetention).Sub(now), time.Minute)
}

func (u userRecord) due(now time.Time) bool {
	return u.SyncedAt.IsZero() || now.Sub(u.SyncedAt) >= resyncAfter
}

// confluenceUser is what GET /wiki/rest/api/user answers, in part.
type confluenceUser struct {
	AccountID      string `json:"accountId"`
	DisplayName    string `json:"displayName"`
	Email          string `json:"email"` // "" when the user's privacy settings hide it
	ProfilePicture struct {
		Path string `json:"path"`
	} `json:"profilePicture"`
	Links struct {
		Base string `json:"base"` // the site, e.g. https://acme.atlassian.net/wiki
	} `json:"_links"`
}

// syncMintedUser adds the user to the installation's sync set and syncs its
// profile unless that was done within resyncAfter.
func (s *Queue) syncMintedUser(ctx context.Context, inst, uid string) error {
	now := s.now()
	var u userRecord
	err := s.kv.Update(ctx, userKey(inst, uid), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		u = userRecord{UID: uid, AddedAt: now}
		if exists && !u.decode(old) {
			u = userRecord{UID: uid, AddedAt: now}
		}
		u.LastMintAt = now
		return u.encode(), u.ttl(now), nil
	})
	if err != nil {
		return fmt.Errorf("scheduler: recording user: %w", err)
	}
	if !u.due(now) {
		return nil
	}
	return s.syncUsers(ctx, inst, []userRecord{u})
}

// syncProfiles is the scheduled profile sync: every user of the installation
// never synced or synced a day ago or more, oldest first, up to maxSyncPerRun.
func (s *Queue) syncProfiles(ctx context.Context, inst string) error {
	now := s.now()
	var due []userRecord
	prefix := usersOf(inst)
	err := s.kv.Scan(ctx, prefix, func(key string, v []byte) error {
		var u userRecord
		u.UID, _ = url.PathUnescape(strings.TrimPrefix(key, prefix))
		if u.decode(v) && u.UID != "" && u.due(now) {
			due = append(due, u)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scheduler: listing users: %w", err)
	}
	if len(due) == 0 {
		return nil // no token needed, none asked for
	}
	slices.SortFunc(due, func(a, b userRecord) int { return a.SyncedAt.Compare(b.SyncedAt) })
	return s.syncUsers(ctx, inst, due[:min(len(due), maxSyncPerRun)])
}

// syncUsers copies each user's Confluence display name, avatar and visible
// email into Weavy. No usable app token ends the run at once, with the
// forge error (no call is made without one). Confluence answering 429 or 5xx
// (after the client's retries) ends it too, and holds the installation's
// syncs off for a while; until then syncUsers calls nothing (the users stay
// due for a later run).
func (s *Queue) syncUsers(ctx context.Context, inst string, users []userRecord) error {
	if until, held := s.heldOff(ctx, inst); held {
		s.log.Info("profile sync held off after Confluence refused calls",
			zap.String("installation_id", inst), zap.Time("not_before", until))
		return nil
	}
	rec, _, err := s.readRecord(ctx, inst)
	if err != nil {
		return err
	}
	if rec.APIBaseURL == "" && s.tokens != nil {
		// Known only from a token so far (no trigger yet): its record has the base.
		if t, err := s.tokens.Lookup(ctx, inst); err == nil {
			rec.APIBaseURL = t.APIBaseURL
		}
	}
	client := s.products.AsApp(inst).For(budget.ProfileSync)
	if !rec.FirstSeen.IsZero() {
		client = client.InstalledAt(rec.FirstSeen)
	}
	var failed []error
	siteURL := ""
	for _, u := range users {
		if err := ctx.Err(); err != nil {
			return err
		}
		accountID, ok := weavy.AccountID(s.scope, u.UID)
		if !ok {
			// Made under another WEAVY_UID_SCOPE: it can never be synced.
			s.log.Warn("profile sync: uid does not match the uid scope, user dropped",
				zap.String("installation_id", inst), zap.String("uid", u.UID))
			_ = s.kv.Delete(ctx, userKey(inst, u.UID))
			continue
		}
		var cu confluenceUser
		err := client.GetJSON(ctx, "/wiki/rest/api/user?accountId="+url.QueryEscape(accountID), &cu)
		var perr *forge.ProductError
		switch {
		case errors.Is(err, forge.ErrAppTokenStale), errors.Is(err, forge.ErrUnknownInstallation):
			return err
		case errors.Is(err, budget.ErrRefused):
			return err // nothing was asked: the points budget says wait (the runner does not count it a failure)
		case errors.As(err, &perr) && perr.Status == http.StatusUnauthorized:
			return err // the token is now marked unusable: the others would fail alike
		case errors.As(err, &perr) && (perr.Status == http.StatusTooManyRequests || perr.Status >= 500):
			// Throttled or failing past the client's retries: more calls
			// now would only make it worse.
			s.holdOff(ctx, inst, perr)
			return fmt.Errorf("scheduler: profile sync ended by Confluence's HTTP %d: %w", perr.Status, err)
		case errors.As(err, &perr) && perr.Status == http.StatusNotFound:
			// Gone from the site (or hidden): asking again every hour is no use.
			s.log.Info("profile sync: user not found in Confluence",
				zap.String("installation_id", inst), zap.String("uid", u.UID))
			s.markSynced(ctx, inst, u.UID)
			continue
		case err != nil:
			failed = append(failed, err)
			continue
		}
		siteURL = cmp.Or(siteOf(cu.Links.Base), siteURL)
		p := weavy.Profile{
			Name:    cu.DisplayName,
			Email:   cu.Email,
			Picture: avatarURL(cu.ProfilePicture.Path, cmp.Or(siteURL, siteOf(rec.SiteURL)), rec.APIBaseURL),
		}
		// Minted for this site: in its directory, and in those of the other
		// sites the same Weavy user is on (the list replaces Weavy's).
		if s.dirs != nil && rec.CloudID != "" {
			dirs, err := s.dirs.UserDirectories(ctx, inst, rec.CloudID, u.UID)
			if err != nil {
				failed = append(failed, err)
				continue
			}
			p.Directories = dirs
		}
		if err := s.weavy.UpsertUser(ctx, u.UID, p); err != nil {
			failed = append(failed, err)
			continue
		}
		if p.Directories != nil {
			if err := s.dirs.DirectoryAssigned(ctx, inst, u.UID); err != nil {
				failed = append(failed, err)
			}
		}
		s.markSynced(ctx, inst, u.UID)
	}
	if siteURL != "" && siteURL != rec.SiteURL {
		s.rememberSite(ctx, inst, siteURL)
	}
	if len(failed) > 0 {
		return fmt.Errorf("scheduler: profile sync: %d of %d users failed, first: %w",
			len(failed), len(users), failed[0])
	}
	return nil
}

// holdOff records when the installation's profile syncs may call Confluence
// again: after the answer's Retry-After, at least holdOffMin, at most holdOffMax.
func (s *Queue) holdOff(ctx context.Context, inst string, perr *forge.ProductError) {
	wait := min(max(perr.RetryAfter, holdOffMin), holdOffMax)
	until := s.now().Add(wait)
	err := s.kv.Put(ctx, notBeforeKey(inst), []byte(until.UTC().Format(time.RFC3339Nano)), wait)
	if err != nil {
		s.log.Warn("profile sync: recording the hold-off failed",
			zap.String("installation_id", inst), zap.Error(err))
		return
	}
	s.log.Warn("profile sync: Confluence refused calls, syncs held off",
		zap.String("installation_id", inst), zap.Int("status", perr.Status), zap.Time("not_before", until))
}

// heldOff reports whether the installation's profile syncs must not call
// Confluence yet, and until when. An unreadable record holds nothing off.
func (s *Queue) heldOff(ctx context.Context, inst string) (time.Time, bool) {
	b, err := s.kv.Get(ctx, notBeforeKey(inst))
	if err != nil {
		return time.Time{}, false
	}
	until, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil || !s.now().Before(until) {
		return time.Time{}, false
	}
	return until, true
}

// markSynced stamps the user's record, unless it was purged meanwhile.
func (s *Queue) markSynced(ctx context.Context, inst, uid string) {
	now := s.now()
	err := s.kv.Update(ctx, userKey(inst, uid), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		u := userRecord{UID: uid}
		if !exists || !u.decode(old) {
			return nil, 0, store.Keep
		}
		u.SyncedAt = now
		return u.encode(), u.ttl(now), nil
	})
	if err != nil {
		s.log.Warn("profile sync: recording the sync failed",
			zap.String("installation_id", inst), zap.String("uid", uid), zap.Error(err))
	}
}

// rememberSite keeps the site URL Confluence told of, for the operator's view.
func (s *Queue) rememberSite(ctx context.Context, inst, siteURL string) {
	err := s.kv.Update(ctx, installationKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if !exists {
			return nil, 0, store.Keep // uninstalled meanwhile, or never recorded
		}
		r := decodeRecord(old, true)
		r.SiteURL = siteURL
		b, err := json.Marshal(r)
		return b, 0, err
	})
	if err != nil {
		s.log.Warn("recording the site URL failed", zap.String("installation_id", inst), zap.Error(err))
	}
}

// siteOf returns the origin (scheme://host) of a site URL such as
// https://acme.atlassian.net/wiki, or "" when it is not one.
func siteOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// avatarURL makes Confluence's profilePicture.path absolute. The site
// (https://acme.atlassian.net + /wiki/aa-avatar/…) is preferred: the browser
// loads it with the user's own session and is sent on to Atlassian's public
// avatar CDN. When the site is unknown — Confluence's answer names it in
// _links.base, and FITs of UI calls in context.siteUrl — apiBaseUrl + path is
// used: a well-formed URL on the same product, though one api.atlassian.com
// serves only with a bearer token.
func avatarURL(path, site, apiBaseURL string) string {
	if path == "" {
		return ""
	}
	if u, err := url.Parse(path); err == nil && u.IsAbs() {
		if u.Scheme == "https" || u.Scheme == "http" {
			return path
		}
		return ""
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if site != "" {
		return site + path
	}
	if apiBaseURL == "" {
		return ""
	}
	return strings.TrimRight(apiBaseURL, "/") + path
}
