package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/resolvers"
)

var errWeavyNotConfigured = errors.New("server: weavy is not configured")

func (s *Server) handleHealthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// handleReadyz is 200 only when Forge's keys are loaded and the store answers.
func (s *Server) handleReadyz(c *gin.Context) {
	checks := map[string]string{"forge_keys": "ok", "store": "ok"}
	// The message names the failing checks; each check says why, once.
	var problems []string
	if err := s.verifier.Ready(); err != nil {
		checks["forge_keys"] = err.Error() // a *forge.KeysError: said for /readyz
		problems = append(problems, "forge_keys")
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.kv.Ping(ctx); err != nil {
		// /readyz is public: name the check, keep hosts and paths in the log.
		logctx.Logger(c.Request.Context(), s.log).Warn("readiness: store unreachable", zap.Error(err))
		checks["store"] = "unreachable (see the server log)"
		problems = append(problems, "store")
	}
	if len(problems) > 0 {
		setErrCode(c.Request, "not_ready")
		c.JSON(http.StatusServiceUnavailable, gin.H{
			"error":  errorDetail{Code: "not_ready", Message: "not ready: " + strings.Join(problems, ", ") + " (see checks)"},
			"checks": checks,
		})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready", "checks": checks})
}

// handleResolver serves POST /resolvers/{functionKey}: the body is the
// payload, read here and decoded once, by its resolver.
func (s *Server) handleResolver(c *gin.Context) {
	body, err := readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.invoke(c, c.Param("functionKey"), body)
}

// handleResolverEnvelope serves POST /resolvers with the @forge/resolver envelope.
func (s *Server) handleResolverEnvelope(c *gin.Context) {
	body, err := readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	key, payload, err := resolvers.ParseEnvelope(body)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.invoke(c, key, payload)
}

// invoke runs the resolver and writes its answer, as every answer is
// written, by c.JSON. No resolver answer may be cached by anything between
// Forge and here: `token` carries a bearer token, `chat` a chat's id.
func (s *Server) invoke(c *gin.Context, key string, payload []byte) {
	c.Header("Cache-Control", "no-store")
	out, err := s.resolvers.Invoke(c.Request.Context(), key, invocation(c), payload)
	if err != nil {
		s.fail(c, err)
		return
	}
	if out == nil {
		out = struct{}{}
	}
	c.JSON(http.StatusOK, out)
}

// jsonContentType is what gin's c.JSON sends.
const jsonContentType = "application/json; charset=utf-8"

// handleScheduled answers Forge's hourly trigger. The app token it carries
// was captured by forgeAuth; the installation's jobs are queued and the call
// answers 202 at once (Forge gives triggers 5 s).
func (s *Server) handleScheduled(c *gin.Context) {
	inv := invocation(c)
	if header(c, hdrAppToken) == "" {
		logctx.Logger(c.Request.Context(), s.log).Warn("scheduled trigger without an app token: enable auth.appSystemToken on its endpoint",
			zap.String("installation_id", inv.InstallationID()))
	}
	if err := s.scheduler.Scheduled(c.Request.Context(), inv); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"status": "accepted"})
}

// handleLifecycle records installs and upgrades; other events are acknowledged.
func (s *Server) handleLifecycle(c *gin.Context) {
	body, err := readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.scheduler.Lifecycle(c.Request.Context(), invocation(c), body); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// handleUninstall stores the installation's tombstone and purge and answers
// at once (preUninstall); the purge runs in the background, retried until
// done (GET /internal/purges).
func (s *Server) handleUninstall(c *gin.Context) {
	if err := s.scheduler.Uninstall(c.Request.Context(), invocation(c)); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "purge_pending"})
}

// handlePurges is the operator's view of the uninstall purges not done yet.
func (s *Server) handlePurges(c *gin.Context) {
	list, err := s.scheduler.Purges(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"purges": list})
}

type appTokenAnswer struct {
	AccessToken string    `json:"access_token"`
	APIBaseURL  string    `json:"api_base_url"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// handleAppToken hands an installation's app token to the vendor's own
// services, by installationId or, with the Connect bridge, by the
// installation's Connect clientKey (the same answer either way).
func (s *Server) handleAppToken(c *gin.Context) {
	inst, clientKey := c.Query("installationId"), c.Query("clientKey")
	switch {
	case inst != "" && clientKey != "":
		s.fail(c, &resolvers.BadRequestError{Msg: "give installationId or clientKey, not both"})
		return
	case inst == "" && clientKey == "":
		s.fail(c, &resolvers.BadRequestError{Msg: "query parameter installationId (or clientKey) is required"})
		return
	case clientKey != "":
		var err error
		if inst, err = s.installationByClientKey(c.Request.Context(), clientKey); err != nil {
			s.fail(c, err)
			return
		}
	}
	t, err := s.appTokens.Usable(c.Request.Context(), inst)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, appTokenAnswer{AccessToken: t.Token, APIBaseURL: t.APIBaseURL, ExpiresAt: t.Exp})
}

// handleConfluence is the operator's view of the Confluence points budget:
// the UTC hour's spend by kind and what is left, per pool, and the pauses
// on now with their reason, as the fleet shares them.
func (s *Server) handleConfluence(c *gin.Context) {
	st, err := s.budget.Status(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// handleInstallations is the operator's view: every installation with its
// site, app version, token freshness (never the token) and trigger health.
func (s *Server) handleInstallations(c *gin.Context) {
	list, err := s.scheduler.Installations(c.Request.Context())
	if err == nil {
		err = s.addConnectKeys(c.Request.Context(), list)
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"installations": list})
}
