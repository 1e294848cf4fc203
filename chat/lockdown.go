package chat

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/forge-remote/forge-remote/weavy"
)

// Lister lists Weavy apps; *weavy.Client is one.
type Lister interface {
	ListApps(ctx context.Context, q string, skip, take int) (weavy.Page[weavy.App], error)
}

// LockdownReport counts what Lockdown found and did (or would do).
type LockdownReport struct {
	Apps, Closed, MembersRemoved int
}

// appPage is how many apps one list call asks for.
const appPage = 100

// Lockdown closes every chat app the Custom UI ever created (uids
// "confluence-…"): page and space chats to access none, the site-wide chat
// to its site's directory, and removes every member without a current lease
// in the store. Without apply it only prints what it would do. Each step is
// idempotent, so an interrupted run is finished by running it again.
func (s *Service) Lockdown(ctx context.Context, l Lister, out io.Writer, apply bool) (LockdownReport, error) {
	var rep LockdownReport
	leased, err := s.liveLeases(ctx)
	if err != nil {
		return rep, err
	}
	verb := "would"
	if apply {
		verb = "did"
	}
	var apps []weavy.App
	for skip := 0; ; skip += appPage {
		page, err := l.ListApps(ctx, UIDPrefix, skip, appPage)
		if err != nil {
			return rep, err
		}
		apps = append(apps, page.Data...)
		if len(page.Data) < appPage || skip+len(page.Data) >= page.Count {
			break
		}
	}
	for _, app := range apps {
		if !strings.HasPrefix(app.UID, UIDPrefix) {
			continue // q matches names too
		}
		rep.Apps++
		want := weavy.AppSpec{Type: "chat", Name: app.Name, Access: weavy.AccessNone}
		cloudID, t, ok := parseAppUID(app.UID)
		if ok {
			want = spec(cloudID, t)
			want.Name = app.Name
		}
		if app.Access != want.Access || (want.Directory != "" && app.Directory != want.Directory) {
			rep.Closed++
			fmt.Fprintf(out, "app %d %s: %s set access %s (was %s), directory %q (was %q)\n",
				app.ID, app.UID, verb, want.Access, app.Access, want.Directory, app.Directory)
			if apply {
				if want.Directory != "" {
					if err := s.ensureDirectory(ctx, cloudID); err != nil {
						return rep, err
					}
				}
				if _, err := s.w.UpsertApp(ctx, app.UID, want); err != nil {
					return rep, err
				}
			}
		}
		n, err := s.removeMembersWithout(ctx, app, leased, apply, func(user string) {
			fmt.Fprintf(out, "app %d %s: %s remove member %s (no current lease)\n", app.ID, app.UID, verb, user)
		})
		rep.MembersRemoved += n
		if err != nil {
			return rep, err
		}
	}
	done := map[bool]string{true: "were", false: "would be"}[apply]
	fmt.Fprintf(out, "%d chat apps: %d %s closed, %d members %s removed\n", rep.Apps, rep.Closed, done, rep.MembersRemoved, done)
	return rep, nil
}

// liveLeases is every (app uid, user) whose lease is current, all
// installations together.
func (s *Service) liveLeases(ctx context.Context) (map[[2]string]bool, error) {
	now := s.now()
	out := map[[2]string]bool{}
	err := s.kv.Scan(ctx, leasePrefix, func(_ string, v []byte) error {
		if l, ok := decodeLease(v); ok && !l.expired(now, s.lease) {
			out[[2]string{l.AppUID, l.User}] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chat: lockdown: listing leases: %w", err)
	}
	return out, nil
}

func (s *Service) removeMembersWithout(ctx context.Context, app weavy.App, leased map[[2]string]bool,
	apply bool, report func(string)) (int, error) {
	var members []weavy.Member
	for skip := 0; ; skip += memberPage {
		page, err := s.w.ListMembers(ctx, app.ID, skip, memberPage)
		if err != nil {
			return 0, err
		}
		members = append(members, page.Data...)
		if len(page.Data) < memberPage || skip+len(page.Data) >= page.Count {
			break
		}
	}
	n := 0
	for _, m := range members {
		if m.UID == "" || leased[[2]string{app.UID, m.UID}] {
			continue
		}
		report(m.UID)
		if apply {
			if err := s.w.DeleteMember(ctx, app.ID, m.UID); err != nil {
				return n, err
			}
			s.removed.WithLabelValues("lockdown").Inc()
		}
		n++
	}
	return n, nil
}
