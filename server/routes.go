package server

import (
	"net/http"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes lists every route the server answers. Nothing is routed elsewhere.
func (s *Server) routes(e *gin.Engine) {
	// HEAD as well: load balancers and uptime checks probe with it, and
	// net/http sends the GET answer's status and headers without the body.
	e.GET("/healthz", s.handleHealthz)
	e.HEAD("/healthz", s.handleHealthz)
	e.GET("/readyz", s.handleReadyz)
	e.HEAD("/readyz", s.handleReadyz)
	e.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})))

	forge := e.Group("", s.bodyLimit, s.forgeAuth())
	forge.POST("/resolvers", s.handleResolverEnvelope)
	forge.POST("/resolvers/:functionKey", s.handleResolver)
	// Triggers only for trigger FITs: a user could otherwise aim their own
	// FIT at them (invokeRemote lets the UI choose the path).
	triggers := forge.Group("/triggers", s.triggerOnly)
	triggers.POST("/scheduled", s.handleScheduled)
	triggers.POST("/lifecycle", s.handleLifecycle)
	triggers.POST("/uninstall", s.handleUninstall)

	// Connect's signed install callbacks: only with CONNECT_APP_KEY. They
	// carry a Connect JWT, not a FIT: the handlers verify it themselves.
	if s.connect != nil {
		connect := e.Group("/connect", s.bodyLimit)
		connect.POST("/installed", s.handleConnectInstalled)
		connect.POST("/uninstalled", s.handleConnectUninstalled)
	}

	// Without INTERNAL_API_TOKEN these routes do not exist at all (404 for
	// every method, not 405).
	if s.internalTokenSum != nil {
		internal := e.Group("/internal", s.internalAuth)
		internal.GET("/app-token", s.handleAppToken)
		internal.GET("/installations", s.handleInstallations)
		internal.GET("/confluence", s.handleConfluence)
		internal.GET("/purges", s.handlePurges)
		if s.connect != nil {
			internal.GET("/connect-keys", s.handleConnectKeys)
		}
	}

	e.NoRoute(func(c *gin.Context) { s.fail(c, errNotFound) })
	e.NoMethod(func(c *gin.Context) { s.fail(c, errMethod) })
}

// ServeHTTP makes the server usable with httptest and benchmarks.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

// routeTable is the real router's table, built once from a server with no
// dependencies: registering routes does not touch them.
var routeTable = sync.OnceValue(func() []gin.RouteInfo {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	(&Server{internalTokenSum: []byte{0}, connect: &connectBridge{}}).routes(e)
	return e.Routes()
})

// Serves reports whether the server routes method and path to a handler.
// The Forge manifest checks use it so a trigger can never point at a route
// that is not served.
func Serves(method, path string) bool {
	for _, r := range routeTable() {
		if r.Method == method && matchRoute(r.Path, path) {
			return true
		}
	}
	return false
}

// matchRoute matches a gin pattern (":param" segments) against a path.
func matchRoute(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if strings.HasPrefix(ps[i], ":") {
			if xs[i] == "" {
				return false
			}
			continue
		}
		if ps[i] != xs[i] {
			return false
		}
	}
	return true
}
