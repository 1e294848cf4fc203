package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// An existing deployment: chats the browser created, open to everyone with
// everyone who opened them a member. lockdown prints what it would do,
// changes nothing without --apply, closes them all with it, keeps members
// with a lease, and a second run finds nothing left to do.
func TestWeavyLockdown(t *testing.T) {
	f := newChatFixture(t, nil)
	x, y, alice := "8e43df10b5138e55ff0a7128", "9f54e021c6249f66001b8239", forgetest.AccountID
	xTok := f.userToken(t, f.fit(t, x))
	yTok := f.userToken(t, f.fit(t, y, onSiteT))
	legacy := pageUID(forgetest.CloudID, "1")
	global := "confluence-" + forgetest.CloudID + "-global"
	for _, c := range []struct{ tok, uid string }{{xTok, legacy}, {yTok, legacy}, {xTok, global}, {xTok, "another-product-app"}} {
		if st, b := f.asUser(t, c.tok, "PUT", "/api/apps/"+c.uid, `{"type":"chat"}`); st >= 300 {
			t.Fatalf("legacy upsert of %s: %d %s", c.uid, st, b)
		}
	}
	// Enough apps for several pages of the list.
	for i := range 105 {
		f.asUser(t, xTok, "PUT", "/api/apps/"+pageUID(cloudT, fmt.Sprint(1000+i)), `{"type":"chat"}`)
	}
	// A chat the server provisioned: alice's lease keeps her.
	f.openOK(t, f.fit(t, alice, onPage("2")))
	f.ts.Stop(t) // bolt: one process at a time

	lockdown := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(t.Context(), append([]string{"forge-remote", "weavy", "lockdown"}, args...),
			func(k string) string { return f.env[k] }, &out, &errOut)
		if err != nil {
			t.Fatalf("lockdown %v: %v\n%s", args, err, errOut.String())
		}
		return out.String()
	}
	dry := lockdown()
	for _, want := range []string{
		"dry run", legacy + ": would set access none (was write)",
		legacy + ": would remove member " + x, legacy + ": would remove member " + y,
		global + `: would set access write (was write), directory "` + dirS + `"`,
		"108 chat apps: 107 would be closed, 108 members would be removed",
	} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, dry)
		}
	}
	if app, _ := f.wv.App(legacy); app.Access != "write" || len(app.Members) != 2 {
		t.Fatalf("the dry run changed %s: %+v", legacy, app)
	}

	lockdown("--apply")
	for _, uid := range []string{legacy, global, pageUID(cloudT, "1050")} {
		app, _ := f.wv.App(uid)
		wantAccess := map[bool]string{true: "write", false: "none"}[uid == global]
		if app.Access != wantAccess || !strings.HasPrefix(app.Directory, "cf-") || len(app.Members) != 0 {
			t.Errorf("%s after --apply: %+v", uid, app)
		}
	}
	if !f.member(pageUID(forgetest.CloudID, "2"), alice) {
		t.Fatal("a member with a lease was removed")
	}
	if app, _ := f.wv.App("another-product-app"); app.Access != "write" || len(app.Members) != 1 {
		t.Fatalf("an app this project never made was touched: %+v", app)
	}
	msgs := func(uid string) string { app, _ := f.wv.App(uid); return fmt.Sprintf("/api/apps/%d/messages", app.ID) }
	if st, _ := f.asUser(t, yTok, "GET", msgs(legacy), ""); st != http.StatusForbidden {
		t.Fatalf("a former member reads the closed chat: %d", st)
	}
	if again := lockdown("--apply"); !strings.Contains(again, "108 chat apps: 0 were closed, 0 members were removed") {
		t.Fatalf("second run:\n%s", again)
	}
}
