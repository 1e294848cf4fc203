// Package forge is what a Forge remote written in Go needs to trust and serve
// Atlassian Forge: it verifies Forge Invocation Tokens (FITs), keeps the app
// system token each call brings, and calls Atlassian product APIs on an
// installation's behalf.
//
// # Verifying invocations
//
// A Forge app reaches its remote with "Authorization: Bearer <FIT>", a JWT
// that Forge signs with keys it publishes as a JWKS. NewVerifier fetches and
// refreshes those keys (an unknown kid triggers one shared, rate-limited
// refetch) and Verifier.Verify checks a FIT: RS256 only, the signature, iss
// (FITIssuer), aud (your app's ARI), exp, nbf and iat. A rejected FIT is a
// *VerifyError whose Reason says why (answer 401); ErrKeysUnavailable means no
// key set could be loaded yet (answer 503, Forge retries). The verified
// claims are an *Invocation: the only source of who calls and from where.
//
// # Middleware
//
// Middleware does the above for net/http: it reads the bearer token, answers
// 401 or 503 as a JSON error, and passes the *Invocation on in the request's
// context, read back with InvocationFrom. WithAppTokenCapture keeps the
// x-forge-oauth-system token of every call (AppTokens keeps it in a store);
// WithErrorHandler answers refusals your way. Gin and other routers adapt it
// in a few lines (see the examples).
//
// # Calling product APIs
//
// A Client calls apiBaseUrl + path with an installation's app system token,
// taken from an AppTokenSource (AppTokens, or your own) before each attempt.
// It retries 429s, and 5xx for idempotent methods, and marks a token Atlassian
// refuses with 401 as unusable at its source.
//
// # Testing
//
// Package forgetest signs FITs and serves a JWKS for tests, so a remote's
// tests run the real verifier.
package forge
