package forge

import "github.com/golang-jwt/jwt/v5"

// FITIssuer is the only accepted `iss` of a Forge Invocation Token.
const FITIssuer = "forge/invocation-token"

// Invocation is the verified content of a FIT: the only source of identity.
//
// It holds only the claims something reads. Forge adds claims and changes the
// types of ones it deprecates (app.license.supportEntitlementNumber is now
// always null); a claim decoded here with the wrong type refuses the token
// with a 401, so a claim nothing reads is not decoded at all. Skipped,
// whatever their type: sub, jti, icLabel, app.id, app.version (deprecated),
// app.module.type, app.installation.id, the installation contexts' name and
// apiBaseUrl, every licence field but active and isActive, and whatever Forge
// adds.
type Invocation struct {
	// The registered claims the verifier checks (iss, aud, exp, nbf, iat).
	Issuer    string           `json:"iss,omitempty"`
	Audience  jwt.ClaimStrings `json:"aud,omitempty"`
	ExpiresAt *jwt.NumericDate `json:"exp,omitempty"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	IssuedAt  *jwt.NumericDate `json:"iat,omitempty"`

	App       App               `json:"app"`
	Context   InvocationContext `json:"context"`
	Principal string            `json:"principal,omitempty"`
}

// Invocation is a jwt.Claims, so golang-jwt's Validator checks it.
var _ jwt.Claims = (*Invocation)(nil)

// GetExpirationTime implements jwt.Claims.
func (i *Invocation) GetExpirationTime() (*jwt.NumericDate, error) { return i.ExpiresAt, nil }

// GetIssuedAt implements jwt.Claims.
func (i *Invocation) GetIssuedAt() (*jwt.NumericDate, error) { return i.IssuedAt, nil }

// GetNotBefore implements jwt.Claims.
func (i *Invocation) GetNotBefore() (*jwt.NumericDate, error) { return i.NotBefore, nil }

// GetIssuer implements jwt.Claims.
func (i *Invocation) GetIssuer() (string, error) { return i.Issuer, nil }

// GetSubject implements jwt.Claims: a FIT's `sub` is not read.
func (i *Invocation) GetSubject() (string, error) { return "", nil }

// GetAudience implements jwt.Claims.
func (i *Invocation) GetAudience() (jwt.ClaimStrings, error) { return i.Audience, nil }

// App is the `app` claim.
type App struct {
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

// Module is `app.module`: which manifest module caused the call (its key is
// logged).
type Module struct {
	Key string `json:"key"`
}

// Installation is `app.installation`: its contexts name the site of a
// trigger's call, which has no `context` claim.
type Installation struct {
	Contexts []InstallationContext `json:"contexts"`
}

// InstallationContext is one entry of `app.installation.contexts`.
type InstallationContext struct {
	CloudID string `json:"cloudId"`
}

// License is `app.license` (absent for free or development installations).
// Forge renamed `isActive` to `active` and removes the old name after
// 2026-10-17; both are read so a FIT of either vintage is judged right.
type License struct {
	Active   *bool `json:"active,omitempty"`
	IsActive *bool `json:"isActive,omitempty"`
}

// InvocationContext is the typed part of the `context` claim (UI calls only).
// moduleKey, localId and accountId are read by nothing but FromTrigger: with
// the rest they tell a UI call from a trigger's.
type InvocationContext struct {
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
	return i.Principal == "" && i.Context == (InvocationContext{})
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
