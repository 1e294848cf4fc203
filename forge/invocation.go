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
type License struct {
	IsActive                 bool   `json:"isActive"`
	BillingPeriod            string `json:"billingPeriod,omitempty"`
	CEID                     string `json:"ceId,omitempty"`
	SupportEntitlementNumber string `json:"supportEntitlementNumber,omitempty"`
	Type                     string `json:"type,omitempty"`
}

// InvocationCtx is the typed part of the `context` claim (UI calls only).
type InvocationCtx struct {
	CloudID   string `json:"cloudId"`
	ModuleKey string `json:"moduleKey"`
	SiteURL   string `json:"siteUrl"`
	LocalID   string `json:"localId"`
	AccountID string `json:"accountId"`
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
