package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/logctx"
)

// MaxBodyBytes is the request body limit (Forge itself caps requests at 500 KB).
const MaxBodyBytes = 1 << 20

// reqState is what the middleware chain records about one request. It is
// the request's context: one allocation carries the log ids, the verified FIT
// and the error code, where context.WithValue and gin's key map cost four.
type reqState struct {
	context.Context // the request's own, for cancellation and other values
	ids             logctx.IDs
	inv             *forge.Invocation // set by forgeAuth
	errCode         string            // set by fail: the access log's error_code
}

type stateKey struct{}

func (st *reqState) Value(k any) any {
	if _, ok := k.(stateKey); ok {
		return st
	}
	if logctx.IsKey(k) {
		return &st.ids
	}
	return st.Context.Value(k)
}

// state is the request's reqState; a placeholder before requestIDs ran.
func state(c *gin.Context) *reqState {
	if st, ok := c.Request.Context().Value(stateKey{}).(*reqState); ok {
		return st
	}
	return &reqState{Context: c.Request.Context()}
}

// recovery turns a panic into a 500 JSON answer and an error log line with the
// stack, never the request's headers.
func (s *Server) recovery(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.log.Error("panic serving request", append(requestFields(c),
				zap.String("panic", fmt.Sprint(r)), zap.ByteString("stack", debug.Stack()))...)
			if !c.Writer.Written() {
				state(c).errCode = "internal_error"
				c.AbortWithStatusJSON(http.StatusInternalServerError,
					errorBody{Error: errorDetail{Code: "internal_error", Message: "internal error"}})
			}
		}
	}()
	c.Next()
}

// requestIDs assigns the request id (a sane inbound x-request-id is kept) and
// picks up Forge's b3 trace ids, so every log line about the request names them.
func (s *Server) requestIDs(c *gin.Context) {
	st := &reqState{Context: c.Request.Context(), ids: logctx.IDs{
		RequestID: headerID(header(c, hdrRequestID), 64),
		TraceID:   headerID(header(c, hdrTraceID), 32),
		SpanID:    headerID(header(c, hdrSpanID), 16),
	}}
	if st.ids.RequestID == "" {
		st.ids.RequestID = s.ids.next()
	}
	c.Writer.Header()[hdrRequestID] = []string{st.ids.RequestID}
	c.Request = c.Request.WithContext(st)
	c.Next()
}

// Canonical names of the headers read on every request (TestHeaderNames).
const (
	hdrAuthorization = "Authorization"
	hdrAppToken      = "X-Forge-Oauth-System"
	hdrRequestID     = "X-Request-Id"
	hdrTraceID       = "X-B3-Traceid"
	hdrSpanID        = "X-B3-Spanid"
)

// header is the request's first value of a header by its canonical name:
// gin's GetHeader canonicalises the name again, allocating for every
// lower-case name on every request.
func header(c *gin.Context, canonical string) string {
	if v := c.Request.Header[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// headerID keeps an inbound id only when it is short and made of safe
// characters, so nobody can inject text into our logs through it.
func headerID(v string, max int) string {
	if v == "" || len(v) > max {
		return ""
	}
	for i := 0; i < len(v); i++ {
		b := v[i]
		if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '-' || b == '_' || b == '.') {
			return ""
		}
	}
	return v
}

// idSource makes request ids: a random per-process prefix and a counter, which
// is unique enough and costs no syscall per request.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

func newIDSource() *idSource {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &idSource{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (s *idSource) next() string {
	return s.prefix + strconv.FormatUint(s.n.Add(1), 36)
}

// accessLog writes one JSON line per request and records the request metrics.
// It logs the route pattern, never the query string or any header value.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	status := c.Writer.Status()
	elapsed := time.Since(start)
	s.metrics.observe(route, methodLabel(c.Request.Method), status, elapsed)
	if !s.log.Core().Enabled(zap.InfoLevel) {
		return
	}
	fields := append(requestFields(c),
		zap.String("method", methodLabel(c.Request.Method)),
		zap.String("route", route),
		zap.Int("status", status),
		zap.Duration("duration", elapsed),
		zap.Int("bytes", c.Writer.Size()),
	)
	st := state(c)
	if st.errCode != "" {
		fields = append(fields, zap.String("error_code", st.errCode))
	}
	if inv := st.inv; inv != nil {
		fields = append(fields, zap.String("installation_id", inv.InstallationID()))
		if inv.App.Module.Key != "" {
			fields = append(fields, zap.String("module", inv.App.Module.Key))
		}
	}
	s.log.Info("request", fields...)
}

// methodLabel bounds the metric's method label: the method is the client's
// to choose, and every new value would be a new time series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodOptions, http.MethodPatch:
		return m
	}
	return "other"
}

// requestFields names the request in a log line.
func requestFields(c *gin.Context) []zap.Field {
	return logctx.Fields(c.Request.Context())
}

// bodyLimit refuses bodies over MaxBodyBytes: at once when Content-Length says
// so, else when the handler reads past the limit.
func (s *Server) bodyLimit(c *gin.Context) {
	if c.Request.ContentLength > MaxBodyBytes {
		s.fail(c, errBodyTooLarge)
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, MaxBodyBytes)
	c.Next()
}

// forgeAuth verifies the Forge Invocation Token and captures the app system
// token the call carries. Nothing downstream runs for an unverified call.
func (s *Server) forgeAuth(c *gin.Context) {
	raw, ok := bearer(header(c, hdrAuthorization))
	if !ok {
		s.rejectFIT(c, errNoFIT)
		return
	}
	inv, err := s.verifier.Verify(c.Request.Context(), raw)
	if err != nil {
		s.rejectFIT(c, err)
		return
	}
	state(c).inv = inv
	if err := s.appTokens.Capture(c.Request.Context(), inv, header(c, hdrAppToken)); err != nil {
		// A trigger exists to bring the token: it fails so Forge retries. A
		// user's call goes on: a cached token needs no store.
		if inv.FromTrigger() {
			s.fail(c, err)
			return
		}
		logctx.Logger(c.Request.Context(), s.log).Warn("app token not captured", zap.Error(err))
	}
	c.Next()
}

var errNotATrigger = &httpError{http.StatusForbidden, "not_a_trigger", "this route is for Forge triggers; the invocation comes from a user"}

// triggerOnly refuses a user's FIT on the trigger routes.
func (s *Server) triggerOnly(c *gin.Context) {
	if inv := invocation(c); inv == nil || !inv.FromTrigger() {
		s.fail(c, errNotATrigger)
		return
	}
	c.Next()
}

func (s *Server) rejectFIT(c *gin.Context, err error) {
	var ve *forge.VerifyError
	if errors.As(err, &ve) {
		s.metrics.fitRejections.WithLabelValues(ve.Reason).Inc()
	}
	s.fail(c, err)
}

// bearer extracts the credentials of an "Authorization: Bearer …" header; the
// scheme is matched case-insensitively.
func bearer(h string) (string, bool) {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(h[len(scheme):])
	return tok, tok != ""
}

// invocation is the verified FIT of the request, or nil.
func invocation(c *gin.Context) *forge.Invocation {
	return state(c).inv
}

// internalAuth guards /internal/*: absent configuration hides the routes (404);
// the bearer token is compared in constant time (hashes first, so the
// comparison does not even leak the length).
func (s *Server) internalAuth(c *gin.Context) {
	if s.internalTokenSum == nil {
		s.fail(c, errNotFound)
		return
	}
	tok, _ := bearer(c.GetHeader("Authorization"))
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], s.internalTokenSum) != 1 {
		s.fail(c, errInternalToken)
		return
	}
	c.Next()
}

// readBody reads the (already limited) request body. A body that stops short
// is the client's doing, never a 500: past the server's ReadTimeout it is a
// 408, otherwise (the client went away, broken chunking) a 400.
func readBody(c *gin.Context) ([]byte, error) {
	if c.Request.Body == nil {
		return nil, nil
	}
	var (
		b   []byte
		err error
	)
	if n := c.Request.ContentLength; n >= 0 && n <= 64<<10 {
		// The usual case: a small body of known length, read into a buffer
		// of its size (io.ReadAll starts at 512 bytes). A larger one is read
		// as it arrives: the declared length alone allocates nothing big.
		b = make([]byte, n)
		_, err = io.ReadFull(c.Request.Body, b)
	} else {
		b, err = io.ReadAll(c.Request.Body)
	}
	if err == nil {
		return b, nil
	}
	var (
		mbe *http.MaxBytesError
		ne  net.Error
	)
	switch {
	case errors.As(err, &mbe):
		return nil, err
	case errors.As(err, &ne) && ne.Timeout():
		return nil, errBodyTimeout
	default:
		return nil, errBodyRead
	}
}
