package server

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Route is one served route, listed for the manifest checks.
type Route struct {
	Method string
	Path   string
}

// routes lists every route the server answers. Nothing is routed elsewhere.
func (s *Server) routes(e *gin.Engine) {
	e.GET("/healthz", s.handleHealthz)
	e.GET("/readyz", s.handleReadyz)
	e.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})))

	forge := e.Group("", s.bodyLimit, s.forgeAuth)
	forge.POST("/resolvers", s.handleResolverEnvelope)
	forge.POST("/resolvers/:functionKey", s.handleResolver)
	forge.POST("/triggers/scheduled", s.handleScheduled)

	internal := e.Group("/internal", s.internalAuth)
	internal.GET("/app-token", s.handleAppToken)
	internal.GET("/installations", s.handleInstallations)

	e.NoRoute(func(c *gin.Context) { s.fail(c, errNotFound) })
	e.NoMethod(func(c *gin.Context) { s.fail(c, errMethod) })
}

// Routes lists what the engine serves (used to check the Forge manifest
// against the real router).
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.engine.Routes() {
		out = append(out, Route{Method: r.Method, Path: r.Path})
	}
	return out
}

// ServeHTTP makes the server usable with httptest and benchmarks.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }
