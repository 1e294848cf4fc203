package weavy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Access is Weavy's access level: of an app for non-members, or of one member.
type Access string

// Access levels Weavy documents (AppAccess, MemberAccess).
const (
	AccessNone  Access = "none"
	AccessRead  Access = "read"
	AccessWrite Access = "write"
)

// AppSpec is what UpsertApp sends: the documented AppUpsert properties this
// server sets. Type is "chat" for the chats the Custom UI mounts.
type AppSpec struct {
	Type      string `json:"type"`
	Name      string `json:"name,omitempty"`
	Access    Access `json:"access,omitempty"`
	Directory string `json:"directory,omitempty"`
}

// App is the part of Weavy's AppOut this server reads.
type App struct {
	ID        int64  `json:"id"`
	UID       string `json:"uid"`
	Name      string `json:"name"`
	Access    Access `json:"access"`
	Directory string `json:"-"`
}

// appOut decodes AppOut: its directory is an object ({id, name}) in some
// versions and a name in others.
type appOut struct {
	App
	Dir json.RawMessage `json:"directory"`
}

func (a *appOut) app() App {
	out := a.App
	var name string
	var obj struct {
		Name string `json:"name"`
	}
	switch {
	case json.Unmarshal(a.Dir, &name) == nil:
		out.Directory = name
	case json.Unmarshal(a.Dir, &obj) == nil:
		out.Directory = obj.Name
	}
	return out
}

// Member is one member of an app (MemberOut, in part).
type Member struct {
	ID     int64  `json:"id"`
	UID    string `json:"uid"`
	Access Access `json:"access"`
}

// Page is one page of a Weavy list answer.
type Page[T any] struct {
	Data  []T `json:"data"`
	Count int `json:"count"` // the total, over every page
}

const (
	opUpsertApp       = "upsert_app"
	opGetApp          = "get_app"
	opListApps        = "list_apps"
	opPutMember       = "put_member"
	opDeleteMember    = "delete_member"
	opListMembers     = "list_members"
	opCreateDirectory = "create_directory"
	opDeleteDirectory = "delete_directory"
)

// UpsertApp creates or updates the app uid with spec (PUT /api/apps/{uid})
// with the API key, so access and directory are what spec says whoever
// created the app first.
func (c *Client) UpsertApp(ctx context.Context, uid string, spec AppSpec) (App, error) {
	if err := checkUID(uid); err != nil {
		return App{}, err
	}
	body, err := json.Marshal(spec)
	if err != nil {
		return App{}, fmt.Errorf("weavy: encoding app: %w", err)
	}
	_, data, err := c.do(ctx, opUpsertApp, http.MethodPut, "/api/apps/"+escapeSegment(uid), body, nil)
	if err != nil {
		return App{}, err
	}
	return c.decodeApp(opUpsertApp, data)
}

// GetApp reads the app with Weavy's numeric id or uid app.
func (c *Client) GetApp(ctx context.Context, app string) (App, error) {
	_, data, err := c.do(ctx, opGetApp, http.MethodGet, "/api/apps/"+escapeSegment(app), nil, nil)
	if err != nil {
		return App{}, err
	}
	return c.decodeApp(opGetApp, data)
}

func (c *Client) decodeApp(op string, data []byte) (App, error) {
	var out appOut
	if err := json.Unmarshal(data, &out); err != nil || out.ID <= 0 {
		c.countError(op, "bad_response")
		return App{}, fmt.Errorf("%w: the app answer has no numeric id", ErrBadResponse)
	}
	return out.app(), nil
}

// ListApps lists apps whose uid or name matches q, take at a time from skip.
func (c *Client) ListApps(ctx context.Context, q string, skip, take int) (Page[App], error) {
	v := url.Values{"q": {q}, "skip": {strconv.Itoa(skip)}, "take": {strconv.Itoa(take)}}
	_, data, err := c.do(ctx, opListApps, http.MethodGet, "/api/apps?"+v.Encode(), nil, nil)
	if err != nil {
		return Page[App]{}, err
	}
	var page Page[appOut]
	if err := json.Unmarshal(data, &page); err != nil {
		c.countError(opListApps, "bad_response")
		return Page[App]{}, fmt.Errorf("%w: the app list is not a page", ErrBadResponse)
	}
	out := Page[App]{Count: page.Count, Data: make([]App, len(page.Data))}
	for i := range page.Data {
		out.Data[i] = page.Data[i].app()
	}
	return out, nil
}

// PutMember adds user (a uid) to app appID with access, or changes its access.
func (c *Client) PutMember(ctx context.Context, appID int64, user string, access Access) error {
	if err := checkUID(user); err != nil {
		return err
	}
	body, _ := json.Marshal(struct {
		Access Access `json:"access"`
	}{access})
	_, _, err := c.do(ctx, opPutMember, http.MethodPut, memberPath(appID, user), body, nil)
	return err
}

// DeleteMember removes user (a uid) from app appID. A member or app that is
// already gone is no error: removal is what was wanted.
func (c *Client) DeleteMember(ctx context.Context, appID int64, user string) error {
	if err := checkUID(user); err != nil {
		return err
	}
	_, _, err := c.do(ctx, opDeleteMember, http.MethodDelete, memberPath(appID, user), nil, nil)
	if ae, ok := errors.AsType[*APIError](err); ok && ae.Status == http.StatusNotFound {
		return nil
	}
	return err
}

func memberPath(appID int64, user string) string {
	return "/api/apps/" + strconv.FormatInt(appID, 10) + "/members/" + escapeSegment(user)
}

// ListMembers lists app appID's members, take at a time from skip.
func (c *Client) ListMembers(ctx context.Context, appID int64, skip, take int) (Page[Member], error) {
	v := url.Values{"skip": {strconv.Itoa(skip)}, "take": {strconv.Itoa(take)}}
	path := "/api/apps/" + strconv.FormatInt(appID, 10) + "/members?" + v.Encode()
	_, data, err := c.do(ctx, opListMembers, http.MethodGet, path, nil, nil)
	if err != nil {
		return Page[Member]{}, err
	}
	var page Page[Member]
	if err := json.Unmarshal(data, &page); err != nil {
		c.countError(opListMembers, "bad_response")
		return Page[Member]{}, fmt.Errorf("%w: the member list is not a page", ErrBadResponse)
	}
	return page, nil
}

// CreateDirectory creates the user directory name; one that exists already
// (409) is no error.
func (c *Client) CreateDirectory(ctx context.Context, name string) error {
	if err := checkUID(name); err != nil { // the same rules: no whitespace, one non-digit
		return err
	}
	body, _ := json.Marshal(struct {
		Name string `json:"name"`
	}{name})
	_, _, err := c.do(ctx, opCreateDirectory, http.MethodPost, "/api/directories", body, nil)
	if ae, ok := errors.AsType[*APIError](err); ok && ae.Status == http.StatusConflict {
		return nil
	}
	return err
}

// DeleteDirectory deletes the user directory name, which takes every user
// out of it; one already gone is no error.
func (c *Client) DeleteDirectory(ctx context.Context, name string) error {
	if err := checkUID(name); err != nil {
		return err
	}
	_, _, err := c.do(ctx, opDeleteDirectory, http.MethodDelete, "/api/directories/"+escapeSegment(name), nil, nil)
	if ae, ok := errors.AsType[*APIError](err); ok && ae.Status == http.StatusNotFound {
		return nil
	}
	return err
}
