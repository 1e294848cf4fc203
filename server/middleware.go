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
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/bearer"
	"github.com/forge-remote/forge-remote/internal/logctx"
)

// MaxBodyBytes is the request body limit (Forge itself caps requests at 500 KB).
const MaxBodyBytes = 1 << 20

// requestInfo is what the middleware chain records about one request for
// its access log line, beyond what the request itself says: the log ids (also
// in the context for logctx) and the error code of a refused request.
type requestInfo struct {
	ids     logctx.IDs
	errCode string // set by writeError: the access log's error_code
	// inv is the verified invocation of a request refused after
	// verification inside forge.Middleware (a trigger whose app token could
	// not be stored), whose context never reached Gin: set by writeError.
	inv *forge.Invocation
}

type requestInfoKey struct{}

// infoOf is the request's requestInfo, or nil before requestIDs ran.
func infoOf(r *http.Request) *requestInfo {
	info, _ := r.Context().Value(requestInfoKey{}).(*requestInfo)
	return info
}

// setErrCode records the error code of the request's answer, and the
// invocation it carries, for its access log.
func setErrCode(r *http.Request, code string) {
	if info := infoOf(r); info != nil {
		info.errCode = code
		if inv, ok := forge.InvocationFrom(r.Context()); ok {
			info.inv = inv
		}
	}
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
				setErrCode(c.Request, "internal_error")
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
	info := &requestInfo{ids: logctx.IDs{
		RequestID: headerID(header(c, hdrRequestID), 64),
		TraceID:   headerID(header(c, hdrTraceID), 32),
		SpanID:    headerID(header(c, hdrSpanID), 16),
	}}
	if info.ids.RequestID == "" {
		info.ids.RequestID = s.ids.next()
	}
	c.Writer.Header()[hdrRequestID] = []string{info.ids.RequestID}
	ctx := logctx.With(c.Request.Context(), &info.ids)
	c.Request = c.Request.WithContext(context.WithValue(ctx, requestInfoKey{}, info))
	c.Next()
}

// Canonical names of the headers read on every request (TestHeaderNames).
const (
	hdrAuthorization = "Authorization"
	hdrAppToken      = forge.AppTokenHeader
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
	info := infoOf(c.Request)
	if info != nil && info.errCode != "" {
		fields = append(fields, zap.String("error_code", info.errCode))
	}
	inv, ok := forge.InvocationFrom(c.Request.Context())
	if !ok && info != nil && info.inv != nil {
		inv, ok = info.inv, true
	}
	if ok {
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

// forgeAuth runs forge.Middleware in the Gin chain: it verifies the Forge
// Invocation Token and captures the app system token the call carries;
// nothing downstream runs for an unverified call. A refusal is answered by
// writeError, as every other error.
func (s *Server) forgeAuth() gin.HandlerFunc {
	return ginMiddleware(forge.Middleware(s.verifier,
		forge.WithAppTokenCapture(s.appTokens),
		forge.WithErrorHandler(s.writeError)))
}

// ginMiddleware adapts a net/http middleware to Gin: the request it passes
// on (with its new context) goes down the Gin chain; one it answers stops it.
func ginMiddleware(mw func(http.Handler) http.Handler) gin.HandlerFunc {
	return func(c *gin.Context) {
		passed := false
		mw(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			passed = true
			c.Request = r
			c.Next()
		})).ServeHTTP(c.Writer, c.Request)
		if !passed {
			c.Abort()
		}
	}
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

// invocation is the verified FIT of the request, or nil.
func invocation(c *gin.Context) *forge.Invocation {
	inv, _ := forge.InvocationFrom(c.Request.Context())
	return inv
}

// internalAuth guards /internal/*: absent configuration hides the routes (404);
// the bearer token is compared in constant time (hashes first, so the
// comparison does not even leak the length).
func (s *Server) internalAuth(c *gin.Context) {
	if s.internalTokenSum == nil {
		s.fail(c, errNotFound)
		return
	}
	tok, _ := bearer.Token(header(c, hdrAuthorization))
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
