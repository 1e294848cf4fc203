package weavysim

import (
	"slices"
	"sort"
)

// world is the fake's model of Weavy's access rules (Weavy ≥ 20, directories
// from 32): apps with an access level for non-members and an optional
// directory, members with their own access, users in directories. Guarded by
// Server.mu.
type world struct {
	nextID   int64
	apps     map[int64]*app
	byUID    map[string]int64
	dirs     map[string]bool     // directory names
	userDirs map[string][]string // uid → the directories the user is in
}

type app struct {
	ID        int64
	UID       string
	Type      string
	Name      string
	Access    string // for non-members: none, read, write
	Directory string // "" = any authenticated user
	Members   map[string]string
	Messages  []message
}

type message struct {
	ID     int64  `json:"id"`
	Author string `json:"author"`
	Text   string `json:"text"`
}

func newWorld() world {
	return world{
		nextID:   1000,
		apps:     make(map[int64]*app),
		byUID:    make(map[string]int64),
		dirs:     make(map[string]bool),
		userDirs: make(map[string][]string),
	}
}

func (w *world) inDirectory(uid, dir string) bool {
	return slices.Contains(w.userDirs[uid], dir)
}

// access is what user uid may do in a: a member's own access wins; a
// non-member gets the app's access, only within its directory if it has one.
func (w *world) access(a *app, uid string) string {
	if m, ok := a.Members[uid]; ok {
		return m
	}
	if a.Directory != "" && !w.inDirectory(uid, a.Directory) {
		return "none"
	}
	return a.Access
}

func canRead(access string) bool  { return access == "read" || access == "write" }
func canWrite(access string) bool { return access == "write" }

// visibleUsers are the users uid can see (search, @mention): those sharing
// a directory with it; a user in no directory sees every other such user,
// which is how one shared directory leaks across customers.
func (w *world) visibleUsers(uid string, all []string) []string {
	mine := w.userDirs[uid]
	var out []string
	for _, other := range all {
		theirs := w.userDirs[other]
		switch {
		case len(mine) == 0 && len(theirs) == 0:
			out = append(out, other)
		default:
			for _, d := range mine {
				if slices.Contains(theirs, d) {
					out = append(out, other)
					break
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func (a *app) out(access string) map[string]any {
	var dir any
	if a.Directory != "" {
		dir = map[string]any{"name": a.Directory}
	}
	perms := []string{}
	if canRead(access) {
		perms = append(perms, "list", "read")
	}
	if canWrite(access) {
		perms = append(perms, "create")
	}
	return map[string]any{
		"id": a.ID, "uid": a.UID, "type": a.Type, "name": a.Name,
		"access": a.Access, "directory": dir, "permissions": perms,
		"members": map[string]any{"count": len(a.Members)},
	}
}
