package forge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/bearer"
	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/internal/secret"
)

// Header names of a Forge remote call.
const (
	// AppTokenHeader carries the app system token when the manifest's
	// endpoint asks for it (auth.appSystemToken).
	AppTokenHeader = "X-Forge-Oauth-System"
	// UserTokenHeader carries the app user token (the signed-in user's, for
	// calls to product APIs as that user) when the endpoint asks for it
	// (auth.appUserToken) and a user is in session.
	UserTokenHeader     = "X-Forge-Oauth-User"
	authorizationHeader = "Authorization"
)

// ErrMissingToken is the rejection of a call without an
// "Authorization: Bearer …" header: a *VerifyError with reason missing_token.
var ErrMissingToken = &VerifyError{Reason: "missing_token", Err: errors.New("no Authorization: Bearer header")}

type invocationKey struct{}

// NewContext returns ctx carrying inv, as Middleware passes it on.
func NewContext(ctx context.Context, inv *Invocation) context.Context {
	return context.WithValue(ctx, invocationKey{}, inv)
}

// InvocationFrom returns the verified invocation Middleware put in ctx.
func InvocationFrom(ctx context.Context) (*Invocation, bool) {
	inv, ok := ctx.Value(invocationKey{}).(*Invocation)
	return inv, ok && inv != nil
}

type userTokenKey struct{}

// WithUserToken returns ctx carrying the app user token of the call, as
// Middleware passes it on.
func WithUserToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, userTokenKey{}, secret.String(token))
}

// UserTokenFrom returns the app user token (UserTokenHeader) of the verified
// call, ok false when Forge sent none: the endpoint lacks
// auth.appUserToken, or no user is in session. Take identity from the
// Invocation, never from this token: it is opaque, for product API calls.
func UserTokenFrom(ctx context.Context) (token string, ok bool) {
	t, _ := ctx.Value(userTokenKey{}).(secret.String)
	return string(t), t != ""
}

// AppTokenCapturer keeps the app system token a verified call carries
// (*AppTokens does, in a store).
type AppTokenCapturer interface {
	Capture(ctx context.Context, inv *Invocation, token string) error
}

// ErrorHandler answers a call Middleware refuses. err is a *VerifyError (a
// bad or missing FIT: answer 401), ErrKeysUnavailable (no key set loaded yet:
// 503), the request context's error, or a capture error of a trigger's call.
type ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

// MiddlewareOption configures Middleware.
type MiddlewareOption func(*middleware)

// WithAppTokenCapture captures the app system token (AppTokenHeader) of
// every verified call. A capture that fails refuses a trigger's call, which
// exists to bring the token, so that Forge retries it; a user's call goes on,
// with a warning in the verifier's log.
func WithAppTokenCapture(c AppTokenCapturer) MiddlewareOption {
	return func(m *middleware) { m.capture = c }
}

// WithErrorHandler replaces the default answer to a refused call, a JSON
// body {"error":{"code":…,"message":…}} with 401, 503 or 500.
func WithErrorHandler(h ErrorHandler) MiddlewareOption {
	return func(m *middleware) { m.fail = h }
}

type middleware struct {
	v       *Verifier
	capture AppTokenCapturer
	fail    ErrorHandler
}

// Middleware verifies the Forge Invocation Token of every request (the bearer
// credentials of its Authorization header) before next runs, and passes the
// verified invocation on in the request's context (InvocationFrom). A call
// whose FIT does not verify never reaches next.
func Middleware(v *Verifier, opts ...MiddlewareOption) func(http.Handler) http.Handler {
	m := &middleware{v: v, fail: WriteError}
	for _, o := range opts {
		o(m)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m.serve(w, r, next)
		})
	}
}

func (m *middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	raw, ok := bearer.Token(firstHeader(r.Header, authorizationHeader))
	if !ok {
		m.v.rejected(r.Context(), ErrMissingToken)
		m.fail(w, r, ErrMissingToken)
		return
	}
	inv, err := m.v.Verify(r.Context(), raw)
	if err != nil {
		m.fail(w, r, err)
		return
	}
	ctx := NewContext(r.Context(), inv)
	if ut := firstHeader(r.Header, UserTokenHeader); ut != "" {
		ctx = WithUserToken(ctx, ut)
	}
	r = r.WithContext(ctx)
	if m.capture != nil {
		if err := m.capture.Capture(r.Context(), inv, firstHeader(r.Header, AppTokenHeader)); err != nil {
			if inv.FromTrigger() {
				m.fail(w, r, err)
				return
			}
			// A cached token needs no store: the user's call goes on.
			logctx.Logger(r.Context(), m.v.log).Warn("app token not captured", zap.Error(err))
		}
	}
	next.ServeHTTP(w, r)
}

// firstHeader is h's first value of a header by its canonical name, without
// canonicalising the name again as http.Header.Get does.
func firstHeader(h http.Header, canonical string) string {
	if v := h[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// WriteError is Middleware's default ErrorHandler: 401
// invalid_invocation_token for a *VerifyError, 503 keys_unavailable for
// ErrKeysUnavailable, else 500 internal_error. The message names the
// rejection's reason, never the token.
func WriteError(w http.ResponseWriter, _ *http.Request, err error) {
	status, code, msg := http.StatusInternalServerError, "internal_error", "internal error"
	var ve *VerifyError
	switch {
	case errors.As(err, &ve):
		status, code, msg = http.StatusUnauthorized, "invalid_invocation_token", "Forge invocation token rejected: "+ve.Reason
	case errors.Is(err, ErrKeysUnavailable):
		status, code, msg = http.StatusServiceUnavailable, "keys_unavailable", "Forge signing keys are not loaded yet; retry shortly"
	}
	body, _ := json.Marshal(errorBody{Error: errorDetail{Code: code, Message: msg}})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
