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
	// DefaultProfileResync: a profile synced longer ago is synced again on
	// a scheduled run (PROFILE_RESYNC). Names and avatars change rarely; a
	// week costs a seventh of the daily resync's Confluence points.
	DefaultProfileResync = 7 * 24 * time.Hour
	// userRetention: a user with no first mint for this long leaves the sync
	// set (the record expires in the store).
	userRetention = 30 * 24 * time.Hour
	// userBulkMax is the most users one read returns: Confluence's GET
	// /wiki/rest/api/user/bulk answers "a maximum of 100 results", the first
	// 100 ids when given more (developer.atlassian.com, Confluence REST v1,
	// Users; older copies said 200: 100 is what is promised today).
	userBulkMax = 100
	// maxBatchesPerRun bounds the bulk reads of one scheduled run; the rest
	// wait for the next hour, oldest first. Two reads and their up to 200
	// Weavy upserts fit the job timeout as the 100 single reads and 100
	// upserts of the daily sync did, and 200 an hour per installation resync
	// 33,600 users a week.
	maxBatchesPerRun = 2
	// DefaultFirstSyncWindow: a user's first token syncs their profile at
	// once when the installation's last first sync is this long ago; the
	// first tokens minted meanwhile are synced together when it ends.
	DefaultFirstSyncWindow = time.Minute
	// holdOffMin is how long profile syncs of an installation pause after
	// Confluence answered 429 or 5xx (past the client's own retries); a
	// longer Retry-After is honoured, up to holdOffMax.
	holdOffMin = 5 * time.Minute
	holdOffMax = 24 * time.Hour
)

// Budget is asked before each bulk read of the profile sync, with the
// Confluence points the read is expected to cost (BulkReadPoints): false
// defers the batch (its users stay due for a later run). It is where the
// points budget the app shares across installations plugs in; the calls it
// is asked about are all of the kind profile_sync. nil in QueueOptions
// allows everything.
type Budget interface {
	Allow(ctx context.Context, installationID string, points int) bool
}

type allowAll struct{}

func (allowAll) Allow(context.Context, string, int) bool { return true }

// BulkReadPoints is what reading n users in one call is expected to cost by
// Atlassian's points rule: 1 for the request and 2 for each identity object
// returned. How the bulk endpoint is charged is not published: this is the
// rule applied to it (a single-user read, 3 points, is the documented case).
func BulkReadPoints(n int) int { return 1 + 2*n }

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

func (u userRecord) due(now time.Time, resync time.Duration) bool {
	return u.SyncedAt.IsZero() || now.Sub(u.SyncedAt) >= resync
}

// confluenceUser is one user as Confluence's v1 API answers it, in part.
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

// bulkUsers is what GET /wiki/rest/api/user/bulk answers, in part: the known
// users among those asked for (an unknown or hidden one is left out).
type bulkUsers struct {
	Results []confluenceUser `json:"results"`
	Limit   int              `json:"limit"` // the most users one call returns
	Links   struct {
		Base string `json:"base"`
	} `json:"_links"`
}

// dueUser is a user due for a sync, with the accountId Confluence knows.
type dueUser struct {
	userRecord
	accountID string
}

// recordMint adds the user to the installation's sync set (or notes the new
// mint) and, when their profile is due, asks for a first sync: at once, or
// with the others minted in the same window (firstSyncs).
func (s *Queue) recordMint(ctx context.Context, inst, uid string) error {
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
	if u.due(now, s.resync) {
		s.first.request(inst)
	}
	return nil
}

// syncProfiles is the scheduled profile sync: up to maxBatchesPerRun bulk
// reads of the installation's due users.
func (s *Queue) syncProfiles(ctx context.Context, inst string) error {
	_, err := s.syncDue(ctx, inst, maxBatchesPerRun)
	return err
}

// syncFirst is the sync a first token asks for: one bulk read, the users
// never synced first, then those otherwise due. A batch the budget defers is
// asked for again when the installation's window ends.
func (s *Queue) syncFirst(ctx context.Context, inst string) error {
	deferred, err := s.syncDue(ctx, inst, 1)
	if deferred {
		s.first.retry(inst)
	}
	return err
}

// syncDue is one pass of the profile sync for an installation: its due users
// (never synced, or not for the resync period), oldest first; then per batch
// of userBulkMax, the budget, one bulk read from Confluence as the app, the
// Weavy upserts, and the marks. It reads the scheduler's own records only:
// the app token is the Confluence client's business, taken once per read.
//
// No usable app token ends the pass at once, with the forge error (no call
// is made without one), as does a 401. Confluence answering 429 or 5xx
// (after the client's retries) ends it too, and holds the installation's
// syncs off for a while; until then syncDue calls nothing. The budget
// refusing a batch ends the pass with deferred true. Users not in the
// answer (gone from the site, or hidden) are marked synced: asking again
// every hour is no use.
func (s *Queue) syncDue(ctx context.Context, inst string, maxBatches int) (deferred bool, err error) {
	if until, held := s.heldOff(ctx, inst); held {
		s.log.Info("profile sync held off after Confluence refused calls",
			zap.String("installation_id", inst), zap.Time("not_before", until))
		return false, nil
	}
	due, err := s.dueUsers(ctx, inst, maxBatches*userBulkMax)
	if err != nil || len(due) == 0 {
		return false, err // none due: no record read, no token asked for
	}
	rec, _, err := s.readRecord(ctx, inst)
	if err != nil {
		return false, err
	}
	client := s.products.AsApp(inst).For(budget.ProfileSync)
	if !rec.FirstSeen.IsZero() {
		client = client.InstalledAt(rec.FirstSeen)
	}
	var failed []error
	siteURL := ""
	for batch := range slices.Chunk(due, userBulkMax) {
		if !s.budget.Allow(ctx, inst, BulkReadPoints(len(batch))) {
			s.log.Info("profile sync deferred by the points budget",
				zap.String("installation_id", inst), zap.Int("users", len(batch)))
			deferred = true
			break
		}
		answer, err := s.readUsers(ctx, client, inst, batch)
		if err != nil {
			s.rememberSite(ctx, inst, rec, siteURL)
			return false, err
		}
		if answer.Limit > 0 && answer.Limit < len(batch) {
			// Confluence looked at the first Limit ids only: the others
			// were not read, and stay due.
			s.log.Warn("profile sync: Confluence returns fewer users per call than asked for",
				zap.String("installation_id", inst), zap.Int("limit", answer.Limit), zap.Int("asked", len(batch)))
			batch = batch[:answer.Limit]
		}
		siteURL = cmp.Or(siteOf(answer.Links.Base), siteURL)
		byAccount := make(map[string]*confluenceUser, len(answer.Results))
		for i := range answer.Results {
			byAccount[answer.Results[i].AccountID] = &answer.Results[i]
		}
		missing := 0
		for _, u := range batch {
			cu := byAccount[u.accountID]
			if cu == nil {
				missing++
				s.markSynced(ctx, inst, u.UID)
				continue
			}
			site := cmp.Or(siteURL, siteOf(cu.Links.Base), siteOf(rec.SiteURL))
			upserted, err := s.upsert(ctx, inst, rec, u.UID, cu, site)
			if err != nil {
				failed = append(failed, err)
			}
			if upserted {
				s.markSynced(ctx, inst, u.UID)
			}
		}
		if missing > 0 {
			s.log.Info("profile sync: users not found in Confluence",
				zap.String("installation_id", inst), zap.Int("users", missing))
		}
	}
	s.rememberSite(ctx, inst, rec, siteURL)
	if len(failed) > 0 {
		return deferred, fmt.Errorf("scheduler: profile sync: %d of %d users failed, first: %w",
			len(failed), len(due), failed[0])
	}
	return deferred, nil
}

// dueUsers lists up to limit of the installation's users due for a sync,
// oldest sync first (never synced before all). A user whose uid was made
// under another WEAVY_UID_SCOPE can never be synced: it is dropped.
func (s *Queue) dueUsers(ctx context.Context, inst string, limit int) ([]dueUser, error) {
	now := s.now()
	var due []dueUser
	var foreign []string
	prefix := usersOf(inst)
	err := s.kv.Scan(ctx, prefix, func(key string, v []byte) error {
		var u userRecord
		u.UID, _ = url.PathUnescape(strings.TrimPrefix(key, prefix))
		if !u.decode(v) || u.UID == "" || !u.due(now, s.resync) {
			return nil
		}
		accountID, ok := weavy.AccountID(s.scope, u.UID)
		if !ok {
			foreign = append(foreign, u.UID)
			return nil
		}
		due = append(due, dueUser{userRecord: u, accountID: accountID})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: listing users: %w", err)
	}
	for _, uid := range foreign {
		s.log.Warn("profile sync: uid does not match the uid scope, user dropped",
			zap.String("installation_id", inst), zap.String("uid", uid))
		_ = s.kv.Delete(ctx, userKey(inst, uid))
	}
	slices.SortFunc(due, func(a, b dueUser) int { return a.SyncedAt.Compare(b.SyncedAt) })
	return due[:min(len(due), limit)], nil
}

// readUsers reads one batch of users with one call to Confluence's bulk
// lookup. Errors that end the pass come back as they are; 429 and 5xx hold
// the installation's syncs off first.
func (s *Queue) readUsers(ctx context.Context, client *forge.AppClient, inst string, batch []dueUser) (*bulkUsers, error) {
	q := make(url.Values, 1)
	for _, u := range batch {
		q.Add("accountId", u.accountID)
	}
	var answer bulkUsers
	err := client.GetJSON(ctx, "/wiki/rest/api/user/bulk?"+q.Encode(), &answer)
	var perr *forge.ProductError
	switch {
	case err == nil:
		return &answer, nil
	case errors.Is(err, budget.ErrRefused):
		// Nothing was asked: the points budget says wait, and the runner
		// does not count it a failure.
		return nil, err
	case errors.As(err, &perr) && (perr.Status == http.StatusTooManyRequests || perr.Status >= 500):
		// Throttled or failing past the client's retries: more calls
		// now would only make it worse.
		s.holdOff(ctx, inst, perr)
		return nil, fmt.Errorf("scheduler: profile sync ended by Confluence's HTTP %d: %w", perr.Status, err)
	}
	// No usable token, a 401 (the token is now marked unusable) or another
	// refusal: the next batch would fare alike.
	return nil, err
}

// upsert copies one user's Confluence display name, avatar and visible email
// into Weavy, with their directory list when the site is known, and reports
// whether Weavy has the profile (it may, with an error recording the
// directory).
func (s *Queue) upsert(ctx context.Context, inst string, rec record, uid string, cu *confluenceUser, site string) (bool, error) {
	p := weavy.Profile{
		Name:    cu.DisplayName,
		Email:   cu.Email,
		Picture: avatarURL(cu.ProfilePicture.Path, site, rec.APIBaseURL),
	}
	// Minted for this site: in its directory, and in those of the other
	// sites the same Weavy user is on (the list replaces Weavy's).
	if s.dirs != nil && rec.CloudID != "" {
		dirs, err := s.dirs.UserDirectories(ctx, inst, rec.CloudID, uid)
		if err != nil {
			return false, err
		}
		p.Directories = dirs
	}
	if err := s.weavy.UpsertUser(ctx, uid, p); err != nil {
		return false, err
	}
	if p.Directories != nil {
		return true, s.dirs.DirectoryAssigned(ctx, inst, uid)
	}
	return true, nil
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

// rememberSite keeps the site URL Confluence told of, for the operator's
// view, when it is new.
func (s *Queue) rememberSite(ctx context.Context, inst string, rec record, siteURL string) {
	if siteURL == "" || siteURL == rec.SiteURL {
		return
	}
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
