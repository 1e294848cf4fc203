package server

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/scheduler"
)

// connectBridge is the Connect/Forge bridge: present only with CONNECT_APP_KEY.
type connectBridge struct {
	verifier *connect.Verifier
	store    *connect.Store
	capturer *connect.Capturer
}

// jobConnectClientKey is the job label of the clientKey capture.
const jobConnectClientKey = "connect_client_key"

// setupConnect builds the bridge and returns the job that reads the reserved
// app property; both are nil when the bridge is off.
func (s *Server) setupConnect(products *forge.Client) (*scheduler.Job, error) {
	if s.cfg.ConnectAppKey == "" {
		return nil, nil
	}
	log := s.log.Named("connect")
	keys := connect.NewKeySource(connect.KeySourceOptions{Override: s.cfg.ConnectKeysURL, Log: log})
	v, err := connect.NewVerifier(connect.VerifierConfig{
		AppKey: s.cfg.ConnectAppKey, BaseURL: s.cfg.ConnectBaseURL, Keys: keys, Now: s.now,
	})
	if err != nil {
		return nil, err
	}
	st := connect.NewStore(s.kv)
	s.connect = &connectBridge{
		verifier: v,
		store:    st,
		capturer: connect.NewCapturer(connect.CapturerOptions{
			Store: st, Products: products, Tokens: s.appTokens, AppKey: s.cfg.ConnectAppKey, Now: s.now, Logger: log,
		}),
	}
	return &scheduler.Job{Name: jobConnectClientKey, Run: s.connect.capturer.Run}, nil
}

// purgers is the scheduler's Purger when there is more than one thing to
// purge on uninstall; nil entries are skipped.
type purgers []scheduler.Purger

func (p purgers) PurgeInstallation(ctx context.Context, inst string) error {
	var errs []error
	for _, one := range p {
		if one != nil {
			errs = append(errs, one.PurgeInstallation(ctx, inst))
		}
	}
	return errors.Join(errs...)
}

// handleConnectInstalled is Connect's signed `installed` callback: a verified
// one that names a Forge installation records the mapping (never the shared
// secret: nothing here signs with it). Anything unverified is a 401 and
// records nothing.
func (s *Server) handleConnectInstalled(c *gin.Context) {
	lc, ok := s.verifyConnect(c, connect.EventInstalled)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	log := logctx.Logger(ctx, s.log).With(zap.String("client_key", lc.ClientKey))
	inst := connect.NormalizeInstallationID(lc.InstallationID)
	if inst == "" {
		// Not a Connect-on-Forge install: nothing ties it to a Forge installation.
		log.Info("connect install without installationId: acknowledged, nothing recorded")
		c.JSON(http.StatusOK, gin.H{"status": "ok", "recorded": false})
		return
	}
	m := connect.Mapping{
		InstallationID: inst,
		ClientKey:      lc.ClientKey,
		SiteURL:        lc.BaseURL,
		CapturedAt:     s.now(),
		Source:         connect.SourceConnectInstall,
	}
	if t, err := s.appTokens.Lookup(ctx, inst); err == nil {
		m.CloudID = t.CloudID
	}
	if err := s.connect.store.Record(ctx, m); err != nil {
		s.fail(c, err)
		return
	}
	log.Info("connect install recorded", zap.String("installation_id", inst))
	c.JSON(http.StatusOK, gin.H{"status": "ok", "recorded": true})
}

// handleConnectUninstalled is Connect's signed `uninstalled` callback,
// acknowledged once verified: the mappings stay (they are what the vendor
// migrates by; Forge's own uninstall purges them) and no secret is held.
func (s *Server) handleConnectUninstalled(c *gin.Context) {
	lc, ok := s.verifyConnect(c, connect.EventUninstalled)
	if !ok {
		return
	}
	logctx.Logger(c.Request.Context(), s.log).Info("connect uninstall acknowledged, mappings kept",
		zap.String("client_key", lc.ClientKey))
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// verifyConnect reads and verifies a signed callback; on failure it has
// answered (401 for anything unverified).
func (s *Server) verifyConnect(c *gin.Context, event string) (*connect.Lifecycle, bool) {
	body, err := readBody(c)
	if err != nil {
		s.fail(c, err)
		return nil, false
	}
	lc, err := s.connect.verifier.Verify(c.Request.Context(), connect.Request{
		Method:        c.Request.Method,
		EscapedPath:   c.Request.URL.EscapedPath(),
		RawQuery:      c.Request.URL.RawQuery,
		Authorization: header(c, hdrAuthorization),
		Body:          body,
	}, event)
	if err != nil {
		s.fail(c, err)
		return nil, false
	}
	return lc, true
}

// connectKeyAnswer is one entry of GET /internal/connect-keys.
type connectKeyAnswer struct {
	InstallationID string    `json:"installation_id"`
	CloudID        string    `json:"cloud_id"`
	ClientKey      string    `json:"client_key"`
	SiteURL        string    `json:"site_url"`
	CapturedAt     time.Time `json:"captured_at"`
	Source         string    `json:"source"`
}

// handleConnectKeys exports every mapping for the vendor's own data
// migration, cloudId and site filled from what Forge told of the
// installation when Connect did not. Never a secret.
func (s *Server) handleConnectKeys(c *gin.Context) {
	ctx := c.Request.Context()
	installs, err := s.scheduler.Installations(ctx)
	if err != nil {
		s.fail(c, err)
		return
	}
	known := make(map[string]scheduler.Installation, len(installs))
	for _, in := range installs {
		known[in.InstallationID] = in
	}
	out := []connectKeyAnswer{}
	err = s.connect.store.List(ctx, func(m connect.Mapping) error {
		in := known[m.InstallationID]
		out = append(out, connectKeyAnswer{
			InstallationID: m.InstallationID,
			CloudID:        cmp.Or(m.CloudID, in.CloudID),
			ClientKey:      m.ClientKey,
			SiteURL:        cmp.Or(m.SiteURL, in.SiteURL),
			CapturedAt:     m.CapturedAt,
			Source:         m.Source,
		})
		return nil
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	slices.SortFunc(out, func(a, b connectKeyAnswer) int { return cmp.Compare(a.InstallationID, b.InstallationID) })
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"connect_keys": out})
}

// installationByClientKey resolves ?clientKey= for /internal/app-token.
func (s *Server) installationByClientKey(ctx context.Context, clientKey string) (string, error) {
	if s.connect == nil {
		return "", &resolvers.BadRequestError{Msg: "clientKey lookups need CONNECT_APP_KEY on the remote"}
	}
	m, ok, err := s.connect.store.ByClientKey(ctx, clientKey)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", forge.ErrUnknownInstallation
	}
	return m.InstallationID, nil
}

// addConnectKeys sets connect_client_key on the operator's view.
func (s *Server) addConnectKeys(ctx context.Context, list []scheduler.Installation) error {
	if s.connect == nil {
		return nil
	}
	keys := map[string]string{}
	if err := s.connect.store.List(ctx, func(m connect.Mapping) error {
		keys[m.InstallationID] = m.ClientKey
		return nil
	}); err != nil {
		return err
	}
	for i := range list {
		list[i].ConnectClientKey = keys[list[i].InstallationID]
	}
	return nil
}
