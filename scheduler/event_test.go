package scheduler

import (
	"errors"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/forge"
)

// anyType is one value of every JSON type, the nested ones included.
var anyType = map[string]string{
	"string": `"x"`, "number": `-1.5e3`, "true": `true`, "false": `false`, "null": `null`,
	"object": `{"a":[1,{"b":null}]}`, "array": `[1,"a",{},[],null]`, "empty object": `{}`, "empty array": `[]`,
}

// The members this server does not read never refuse an event, whatever
// their type: an install with each of them set to each type is recorded,
// its installerAccountId kept.
func TestLifecycleIgnoresUnreadMembers(t *testing.T) {
	unread := []string{
		`"app":{"id":%s,"version":"2.0.0"}`, `"app":{"name":%s,"version":"2.0.0"}`,
		`"app":{"ownerAccountId":%s,"version":"2.0.0"}`, `"environment":{"id":"env-9","type":%s}`,
		`"permissions":%s`, `"upgraderAccountId":%s`, `"somethingNew":%s`,
		`"retryContext":{"retryCount":2,"retryReason":%s,"retryData":%s}`,
		`"context":{"cloudId":"` + cloudA + `","moduleKey":%s}`,
	}
	for _, member := range unread {
		for typ, v := range anyType {
			body := `{"eventType":"avi:forge:installed:app","id":"` + instA + `","installerAccountId":"557058:installer",` +
				strings.ReplaceAll(member, "%s", v) + `}`
			for shape, b := range map[string]string{"top-level": body, "payload": `{"payload":` + body + `,"x":` + v + `}`} {
				e := newEnv(t, nil)
				if err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(b)); err != nil {
					t.Errorf("%s %s as %s: %v", shape, member, typ, err)
					continue
				}
				list, err := e.svc.Installations(t.Context())
				if err != nil || len(list) != 1 || list[0].InstallerAccountID != "557058:installer" {
					t.Errorf("%s %s as %s: not recorded: %+v %v", shape, member, typ, list, err)
				}
			}
		}
	}
	// Of an event it does not act on, only the event type is read.
	for typ, v := range anyType {
		e := newEnv(t, nil)
		body := `{"eventType":"avi:confluence:created:page","id":` + v + `,"app":` + v + `,"context":` + v +
			`,"retryContext":` + v + `,"environment":` + v + `}`
		if err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(body)); err != nil {
			t.Errorf("unknown event with members as %s: %v", typ, err)
		}
		if keys := e.keys(t); len(keys) != 0 {
			t.Errorf("unknown event with members as %s wrote %q", typ, keys)
		}
	}
}

// A member this server reads, with a type it cannot use, is a 400 naming
// the member and what was expected; nothing is recorded.
func TestLifecycleWrongTypeNamesTheField(t *testing.T) {
	const ev = `"eventType":"avi:forge:installed:app"`
	cases := []struct{ body, want string }{
		{`{"eventType":42}`, `field "eventType" must be a string, not a number`},
		{`{"payload":{"eventType":["x"]}}`, `field "payload.eventType" must be a string, not an array`},
		{`{"payload":"x"}`, `field "payload" must be an object, not a string`},
		{`{` + ev + `,"id":{}}`, `field "id" must be a string, not an object`},
		{`{` + ev + `,"installerAccountId":5}`, `field "installerAccountId" must be a string, not a number`},
		{`{"payload":{` + ev + `,"installerAccountId":true}}`, `field "payload.installerAccountId" must be a string, not a boolean`},
		{`{"eventType":"avi:forge:upgraded:app","upgraderAccountId":[]}`, `field "upgraderAccountId" must be a string, not an array`},
		{`{` + ev + `,"app":"x"}`, `field "app" must be an object, not a string`},
		{`{` + ev + `,"app":{"version":{}}}`, `field "app.version" must be a string, not an object`},
		{`{` + ev + `,"environment":[]}`, `field "environment" must be an object, not an array`},
		{`{` + ev + `,"environment":{"id":1}}`, `field "environment.id" must be a string, not a number`},
		{`{` + ev + `,"context":7}`, `field "context" must be a site ARI string or an object, not a number`},
		{`{` + ev + `,"context":{"cloudId":false}}`, `field "context.cloudId" must be a string, not a boolean`},
		{`{` + ev + `,"retryContext":"x"}`, `field "retryContext" must be an object, not a string`},
		{`{` + ev + `,"retryContext":{"retryCount":"2"}}`, `field "retryContext.retryCount" must be a number, not a string`},
		{`{"payload":{` + ev + `,"retryContext":{"retryCount":null,"retryReason":1}},"retryContext":{"retryCount":"x"}}`, ``}, // the event's own wins
		{`{"payload":{` + ev + `},"retryContext":{"retryCount":"x"}}`, `field "retryContext.retryCount" must be a number, not a string`},
		// Bodies that are no JSON object say so.
		{``, `the event body is empty; a JSON object is expected`},
		{`  `, `the event body is empty; a JSON object is expected`},
		{`[]`, `the event body is an array; a JSON object is expected`},
		{`null`, `the event body is null; a JSON object is expected`},
		{`"x"`, `the event body is a string; a JSON object is expected`},
		{`<event type="installed"/>`, `the event body is not JSON; a JSON object is expected`},
		{`{"eventType":`, `the event body is not valid JSON (at byte 13)`},
		{`{} x`, `the event body is not valid JSON (at byte 4)`},
	}
	for _, tc := range cases {
		e := newEnv(t, nil)
		err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(tc.body))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.body, err)
			}
			continue
		}
		var be *BadEventError
		if !errors.As(err, &be) || !errors.Is(err, ErrBadEvent) || be.Msg != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.body, err, tc.want)
		}
		if keys := e.keys(t); len(keys) != 0 {
			t.Errorf("%s: refused, yet wrote %q", tc.body, keys)
		}
	}
}

// The event's context gives the cloudId when the FIT names no site: deployed
// remotes receive a site ARI, the docs show an object. A string that is no
// site ARI is ignored, not refused.
func TestLifecycleContextShapes(t *testing.T) {
	inv := &forge.Invocation{App: forge.App{InstallationID: instA}}
	for ctx, want := range map[string]string{
		`"ari:cloud:confluence::site/` + cloudA + `"`:  cloudA,
		`"ari:cloud:jira::site/` + cloudB + `"`:        cloudB,
		`{"cloudId":"` + cloudA + `","moduleKey":"k"}`: cloudA,
		`"ari:cloud:confluence::site/"`:                "",
		`"ari:cloud:confluence::site/a/b"`:             "",
		`"site/` + cloudA + `"`:                        "",
		`"not an ari"`:                                 "",
		`null`:                                         "",
		`{}`:                                           "",
	} {
		e := newEnv(t, nil)
		body := `{"eventType":"avi:forge:installed:app","installerAccountId":"a","context":` + ctx + `}`
		if err := e.svc.Lifecycle(t.Context(), inv, []byte(body)); err != nil {
			t.Errorf("context %s: %v", ctx, err)
			continue
		}
		list, _ := e.svc.Installations(t.Context())
		if len(list) != 1 || list[0].CloudID != want {
			t.Errorf("context %s: recorded %+v, want cloudId %q", ctx, list, want)
		}
	}
	// The FIT's site wins over the body's.
	e := newEnv(t, nil)
	body := `{"eventType":"avi:forge:installed:app","context":"ari:cloud:confluence::site/` + cloudB + `"}`
	if err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(body)); err != nil {
		t.Fatal(err)
	}
	if list, _ := e.svc.Installations(t.Context()); len(list) != 1 || list[0].CloudID != cloudA {
		t.Fatalf("the body's site replaced the FIT's: %+v", list)
	}
}

// The docs give the installation's id as a bare uuid, deployed remotes the
// ARI: either matches the FIT's installation without a warning; another
// installation's id is logged and the FIT's is used.
func TestLifecycleEventIDForms(t *testing.T) {
	const uuid = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
	inst := "ari:cloud:ecosystem::installation/" + uuid
	for id, warn := range map[string]bool{uuid: false, inst: false, "": false, "0c5dbd0a-0e3f-4d8e-9a55-5a3f1ad2b0de": true} {
		e := newEnv(t, nil)
		body := `{"eventType":"avi:forge:installed:app","id":"` + id + `"}`
		if err := e.svc.Lifecycle(t.Context(), e.inv(inst, cloudA), []byte(body)); err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		if got := e.logs.FilterMessageSnippet("names another installation").Len() > 0; got != warn {
			t.Errorf("id %q: warned %v, want %v", id, got, warn)
		}
		if list, _ := e.svc.Installations(t.Context()); len(list) != 1 || list[0].InstallationID != inst {
			t.Errorf("id %q: recorded %+v", id, list)
		}
	}
}
