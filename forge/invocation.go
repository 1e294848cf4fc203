// Package forge verifies Forge Invocation Tokens, captures the app system token each
// call brings, and calls Atlassian product APIs on an installation's behalf.
package forge

import "github.com/golang-jwt/jwt/v5"

// Issuer is the only accepted `iss` of a Forge Invocation Token.
const Issuer = "forge/invocation-token"

// Invocation is the verified content of a FIT: the only source of identity.
type Invocation struct {
	jwt.RegisteredClaims
	App       App           `json:"app"`
	Context   InvocationCtx `json:"context"`
	Principal string        `json:"principal,omitempty"`
	ICLabel   string        `json:"icLabel,omitempty"`
}

// App is the `app` claim.
type App struct {
	ID             string        `json:"id"`
	InstallationID string        `json:"installationId"`
	APIBaseURL     string        `json:"apiBaseUrl"`
	AppVersion     string        `json:"appVersion"`
	Environment    Environment   `json:"environment"`
	Module         Module        `json:"module"`
	Installation   *Installation `json:"installation,omitempty"`
	License        *License      `json:"license,omitempty"`
}

// Environment is `app.environment`.
type Environment struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Module is `app.module`: which manifest module caused the call.
type Module struct {
	Type string `json:"type"`
	Key  string `json:"key"`
}

// Installation is `app.installation`.
type Installation struct {
	ID       string                `json:"id"`
	Contexts []InstallationContext `json:"contexts"`
}

// InstallationContext is one entry of `app.installation.contexts`.
type InstallationContext struct {
	Name       string `json:"name"`
	APIBaseURL string `json:"apiBaseUrl"`
	CloudID    string `json:"cloudId"`
}

// License is `app.license` (absent for free or development installations).
// Forge renamed `isActive` to `active` and removes the old name after
// 2026-10-17; both are read so a FIT of either vintage is judged right.
type License struct {
	Active                   *bool  `json:"active,omitempty"`
	IsActive                 *bool  `json:"isActive,omitempty"`
	BillingPeriod            string `json:"billingPeriod,omitempty"`
	CEID                     string `json:"ceId,omitempty"`
	SupportEntitlementNumber string `json:"supportEntitlementNumber,omitempty"`
	Type                     string `json:"type,omitempty"`
}

// InvocationCtx is the typed part of the `context` claim (UI calls only).
type InvocationCtx struct {
	CloudID    string      `json:"cloudId"`
	ModuleKey  string      `json:"moduleKey"`
	SiteURL    string      `json:"siteUrl"`
	LocalID    string      `json:"localId"`
	AccountID  string      `json:"accountId"`
	Extension  Extension   `json:"extension"`
	UserAccess *UserAccess `json:"userAccess,omitempty"`
}

// Extension is `context.extension`: where in Confluence the module runs. It is
// signed by Forge, so it is the only trustworthy answer to "which page".
type Extension struct {
	Type    string     `json:"type"`
	Content ContentRef `json:"content"`
	Space   SpaceRef   `json:"space"`
}

// ContentRef is `context.extension.content` (a page or blog post).
type ContentRef struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// SpaceRef is `context.extension.space`.
type SpaceRef struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// UserAccess is `context.userAccess`, present for apps on user-based billing.
type UserAccess struct {
	Enabled   bool `json:"enabled"`
	HasAccess bool `json:"hasAccess"`
}

// AnonymousPrincipal is the accountId Forge gives a viewer who is not signed in.
const AnonymousPrincipal = "unidentified"

// Anonymous reports whether the call comes from a viewer who is not signed in.
func (i *Invocation) Anonymous() bool { return i.Principal == AnonymousPrincipal }

// LicenseInactive reports whether the FIT says the app's licence is not
// active. No `app.license` (free apps, development and staging) is not
// inactive; neither is a licence that states nothing. With user-based
// billing, a user without access counts as unlicensed too.
func (i *Invocation) LicenseInactive() bool {
	if ua := i.Context.UserAccess; ua != nil && ua.Enabled && !ua.HasAccess {
		return true
	}
	l := i.App.License
	switch {
	case l == nil:
		return false
	case l.Active != nil:
		return !*l.Active
	case l.IsActive != nil:
		return !*l.IsActive
	}
	return false
}

// FromTrigger reports whether the invocation comes from a trigger (scheduled,
// lifecycle, preUninstall) rather than a user's UI: triggers carry neither a
// principal nor a context claim. It is decided by Forge's signed claims, so a
// user cannot make their own FIT look like a trigger's.
func (i *Invocation) FromTrigger() bool {
	return i.Principal == "" && i.Context == (InvocationCtx{})
}

// InstallationID is the tenant key.
func (i *Invocation) InstallationID() string { return i.App.InstallationID }

// APIBaseURL is the base of every product API call for this installation.
func (i *Invocation) APIBaseURL() string { return i.App.APIBaseURL }

// CloudID is the site's cloud id: from the context claim when present (UI calls),
// else from the installation contexts (trigger calls).
func (i *Invocation) CloudID() string {
	if i.Context.CloudID != "" {
		return i.Context.CloudID
	}
	if i.App.Installation != nil {
		for _, c := range i.App.Installation.Contexts {
			if c.CloudID != "" {
				return c.CloudID
			}
		}
	}
	return ""
}
