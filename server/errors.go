package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/scheduler"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// errorBody is the one error shape: {"error":{"code":"snake_case","message":"…"}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// httpError is an error that already knows its answer (used by middleware).
type httpError struct {
	status int
	code   string
	msg    string
}

func (e *httpError) Error() string { return e.msg }

var (
	errBodyTooLarge  = &httpError{http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds 1 MiB"}
	errBodyTimeout   = &httpError{http.StatusRequestTimeout, "body_timeout", "the request body did not arrive in time"}
	errBodyRead      = &httpError{http.StatusBadRequest, "bad_request", "the request body could not be read"}
	errNotFound      = &httpError{http.StatusNotFound, "not_found", "no such route"}
	errMethod        = &httpError{http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route"}
	errInternalToken = &httpError{http.StatusForbidden, "forbidden", "a valid Authorization: Bearer INTERNAL_API_TOKEN is required"}
)

// classify is the ONE place that maps errors to status codes. It returns the
// status, the error code and a message safe to show the caller (never a token).
func classify(err error) (int, string, string) {
	var (
		he  *httpError
		ve  *forge.VerifyError
		cve *connect.VerifyError
		bre *resolvers.BadRequestError
		rle *weavy.RateLimitedError
		ae  *weavy.APIError
		se  *forge.StaleError
		ure *resolvers.UnknownResolverError
		bee *scheduler.BadEventError
		mbe *http.MaxBytesError
		cfe *resolvers.ConfluenceError
	)
	switch {
	case errors.As(err, &he):
		return he.status, he.code, he.msg
	case errors.As(err, &mbe):
		return errBodyTooLarge.status, errBodyTooLarge.code, errBodyTooLarge.msg
	case errors.As(err, &ve):
		// 401 is reserved for exactly this: Forge reads it as "FIT failed".
		return http.StatusUnauthorized, "invalid_invocation_token", "Forge invocation token rejected: " + ve.Reason
	case errors.As(err, &cve):
		// A Connect callback that does not verify: Connect reads 401 alike.
		return http.StatusUnauthorized, "invalid_connect_token", "Connect install token rejected: " + cve.Reason
	case errors.Is(err, connect.ErrKeysUnavailable):
		// Not judged, so not refused: 401 would tell Atlassian the install
		// is refused, 503 makes it a failure to retry.
		return http.StatusServiceUnavailable, "connect_keys_unavailable", "the Connect install key could not be fetched; retry shortly"
	case errors.Is(err, forge.ErrKeysUnavailable):
		return http.StatusServiceUnavailable, "keys_unavailable", "Forge signing keys are not loaded yet; retry shortly"
	case errors.As(err, &bre):
		return http.StatusBadRequest, "bad_request", bre.Msg
	case errors.As(err, &bee):
		return http.StatusBadRequest, "bad_event", bee.Msg
	case errors.Is(err, scheduler.ErrBadEvent):
		return http.StatusBadRequest, "bad_event", "the event cannot be used"
	case errors.As(err, &ure):
		return http.StatusNotFound, "unknown_resolver", fmt.Sprintf("unknown resolver %q", truncate(ure.FunctionKey, maxEchoed))
	case errors.Is(err, resolvers.ErrUnknownResolver):
		return http.StatusNotFound, "unknown_resolver", "unknown resolver"
	case errors.Is(err, resolvers.ErrNoUser):
		return http.StatusForbidden, "no_user", "this resolver needs a signed-in user; the invocation has no principal"
	case errors.Is(err, resolvers.ErrAnonymous):
		return http.StatusForbidden, "anonymous", "sign in to Confluence to use the chat"
	case errors.Is(err, resolvers.ErrLicenseInactive):
		return http.StatusForbidden, "license_inactive", "the app's licence for this site is not active"
	case errors.Is(err, chat.ErrNoAccess):
		return http.StatusForbidden, "no_access", "you can't view this page, so you can't join its chat"
	case errors.Is(err, chat.ErrUninstalled):
		return http.StatusGone, "uninstalled", "the app was uninstalled from this site"
	case errors.Is(err, resolvers.ErrUserTokenMissing):
		return http.StatusForbidden, "user_token_missing", "the app is misconfigured: its manifest's endpoint module must set auth.appUserToken.enabled: true (with the read:app-user-token scope) so that page access can be checked as the user"
	case errors.As(err, &cfe) && cfe.Busy():
		// Never 401 for anything Confluence said: Forge reserves it for a
		// refused FIT.
		return http.StatusServiceUnavailable, "confluence_busy", "Confluence is busy; retry after " + strconv.Itoa(confluenceRetryAfterSeconds(cfe.RetryAfter)) + " s"
	case errors.As(err, &cfe):
		return http.StatusServiceUnavailable, "confluence_unavailable", "Confluence could not check your access to this page; retry shortly"
	case errors.Is(err, errWeavyNotConfigured):
		return http.StatusServiceUnavailable, "weavy_not_configured", "WEAVY_URL and WEAVY_API_KEY are not set on the remote"
	case errors.As(err, &rle):
		return http.StatusTooManyRequests, "refresh_rate_limited", "too many token refreshes for this user; retry after " + strconv.Itoa(retryAfterSeconds(rle.RetryAfter)) + " s"
	case errors.Is(err, weavy.ErrTimeout):
		return http.StatusGatewayTimeout, "weavy_timeout", "Weavy did not answer in time"
	case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests:
		// Weavy is throttling our API key: nothing the caller did, and it
		// passes. 503 with Retry-After, not 429, which means "you refresh too
		// often" here.
		return http.StatusServiceUnavailable, "weavy_rate_limited", "Weavy is rate limiting this environment; retry after " + strconv.Itoa(weavyRetryAfterSeconds(ae.RetryAfter)) + " s"
	case errors.As(err, &ae):
		msg := "Weavy answered " + strconv.Itoa(ae.Status)
		if ae.Title != "" {
			msg += ": " + ae.Title
		}
		return http.StatusBadGateway, "weavy_unavailable", msg
	case errors.Is(err, weavy.ErrUnreachable):
		return http.StatusBadGateway, "weavy_unavailable", "could not reach Weavy (connection failed)"
	case errors.Is(err, weavy.ErrBadResponse):
		return http.StatusBadGateway, "weavy_unavailable", "Weavy answered something this server cannot use"
	case errors.As(err, &se):
		return http.StatusConflict, "app_token_stale", fmt.Sprintf(
			"the app token held for %s expires at %s, too soon to hand out; Forge's next call to the remote brings a fresh one",
			se.InstallationID, se.Exp.UTC().Format(time.RFC3339))
	case errors.Is(err, forge.ErrUnknownInstallation):
		return http.StatusNotFound, "unknown_installation", "no app token was ever captured for this installation"
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrSealed):
		return http.StatusServiceUnavailable, "store_unavailable", "the store is unavailable; retry shortly"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout", "the request ran out of time"
	case errors.Is(err, context.Canceled):
		return 499, "canceled", "the client went away"
	default:
		return http.StatusInternalServerError, "internal_error", "internal error"
	}
}

// maxEchoed bounds what of a caller's input an error message repeats.
const maxEchoed = 100

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Bounds of the Retry-After passed on from a Weavy 429: the Custom UI should
// neither hammer nor give up for long; absent, a short default.
const (
	weavyRetryAfterDefault = 5 * time.Second
	weavyRetryAfterMax     = 60 * time.Second
)

// weavyRetryAfterSeconds is d, from an APIError and so never negative,
// bounded; 0 (no Retry-After) means the default.
func weavyRetryAfterSeconds(d time.Duration) int {
	return retryAfterSeconds(min(cmp.Or(d, weavyRetryAfterDefault), weavyRetryAfterMax))
}

// Bounds of the Retry-After passed on from a Confluence 429: Atlassian's
// hourly pool may ask for up to an hour, which the UI shows as a wait.
const (
	confluenceRetryAfterDefault = 5 * time.Second
	confluenceRetryAfterMax     = time.Hour
)

func confluenceRetryAfterSeconds(d time.Duration) int {
	return retryAfterSeconds(min(cmp.Or(d, confluenceRetryAfterDefault), confluenceRetryAfterMax))
}

func retryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// fail answers c with the JSON error for err and stops the chain.
func (s *Server) fail(c *gin.Context, err error) {
	c.Abort()
	s.writeError(c.Writer, c.Request, err)
}

// writeError answers the JSON error for err: the one place an error becomes
// an answer, for Gin's handlers (fail) and forge.Middleware alike.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := classify(err)
	var rle *weavy.RateLimitedError
	var ae *weavy.APIError
	var cfe *resolvers.ConfluenceError
	switch {
	case errors.As(err, &rle):
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(rle.RetryAfter)))
	case code == "weavy_rate_limited" && errors.As(err, &ae):
		w.Header().Set("Retry-After", strconv.Itoa(weavyRetryAfterSeconds(ae.RetryAfter)))
	case code == "confluence_busy" && errors.As(err, &cfe):
		w.Header().Set("Retry-After", strconv.Itoa(confluenceRetryAfterSeconds(cfe.RetryAfter)))
	}
	fields := logctx.Fields(r.Context())
	if status >= 500 {
		s.log.Warn("request failed", append(fields, zap.String("code", code), zap.Error(err))...)
	} else {
		s.log.Debug("request refused", append(fields, zap.String("code", code), zap.String("reason", msg))...)
	}
	setErrCode(r, code)
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}

// writeJSON writes v as gin's c.JSON does: the same header, no newline.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":{"code":"internal_error","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", jsonContentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
