package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/internal/httplimits"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/scheduler"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// shutdownTimeout bounds a graceful stop; the HTTP limits are in
// internal/httplimits.
const shutdownTimeout = 20 * time.Second

// Options are the dependencies a caller may inject (tests, dev mode).
type Options struct {
	Logger     *zap.Logger
	Now        func() time.Time
	HTTPClient *http.Client // towards Forge's JWKS; nil → a default client
	// ProductHTTPClient carries the calls to Confluence (apiBaseUrl); nil →
	// forge.NewClient's own, which never follows a redirect. The scale run
	// (bench/confluencescale) hands the server a model of Confluence here.
	ProductHTTPClient *http.Client
	// WeavyHTTPClient carries the calls to Weavy; nil → weavy.NewClient's own.
	WeavyHTTPClient *http.Client
	// KV, when set, is the store, used as given instead of opening
	// STORE_URL (no sealing); the server closes it. For the scale run.
	KV store.KV
	// PageCheckTimeout bounds the chat resolver's check with Confluence; 0
	// means resolvers.DefaultCheckTimeout.
	PageCheckTimeout time.Duration
	// Timeouts overrides the http.Server limits (tests of slow clients);
	// zero fields keep the defaults; a negative one is refused.
	Timeouts Timeouts
	// PurgeBackoff, if set, is the wait between the attempts of an
	// uninstall purge, without doubling (tests; the default is 5 s doubling
	// to 5 min).
	PurgeBackoff time.Duration
}

// Timeouts are the http.Server's limits on slow and idle clients.
type Timeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

func (t Timeouts) orDefaults() (Timeouts, error) {
	// http.Server takes a negative limit for none at all: a test asking for
	// that by mistake would wait on its slow client for ever.
	if min(t.ReadHeader, t.Read, t.Write, t.Idle) < 0 {
		return Timeouts{}, fmt.Errorf("server: negative timeout in %+v", t)
	}
	return Timeouts{
		ReadHeader: cmp.Or(t.ReadHeader, httplimits.ReadHeaderTimeout),
		Read:       cmp.Or(t.Read, httplimits.ReadTimeout),
		Write:      cmp.Or(t.Write, httplimits.WriteTimeout),
		Idle:       cmp.Or(t.Idle, httplimits.IdleTimeout),
	}, nil
}

// Server is one replica of forge-remote.
type Server struct {
	cfg       Config
	log       *zap.Logger
	now       func() time.Time
	registry  *prometheus.Registry
	metrics   *httpMetrics
	kv        store.KV
	verifier  *forge.Verifier
	appTokens *forge.AppTokens
	budget    *budget.Budget    // the Confluence points budget of the fleet
	broker    *weavy.Broker     // nil when Weavy is not configured
	weavy     *weavy.Client     // nil when Weavy is not configured
	chat      *chat.Service     // nil when Weavy is not configured
	access    *resolvers.Access // the chat resolver's page check; nil when Weavy is not configured
	queue     *scheduler.Queue
	scheduler *scheduler.Service // on queue
	connect   *connectBridge     // nil unless CONNECT_APP_KEY is set
	fleet     *fleet             // nil unless replicas share the store (it has a store.PubSub)
	resolvers *resolvers.Registry
	engine    *gin.Engine
	ids       *idSource

	timeouts         Timeouts
	internalTokenSum []byte // sha256 of INTERNAL_API_TOKEN; nil = routes hidden
	closeOnce        sync.Once
}

// New builds a server from cfg: it opens the store and starts loading Forge's
// keys. A JWKS endpoint that is down does not stop the start (readiness says
// so); a store that cannot be opened does.
func New(ctx context.Context, cfg Config, o Options) (_ *Server, err error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	timeouts, err := o.Timeouts.orDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       o.Logger,
		now:       o.Now,
		registry:  prometheus.NewRegistry(),
		resolvers: resolvers.NewRegistry(),
		ids:       newIDSource(),
		timeouts:  timeouts,
	}
	s.metrics = newHTTPMetrics(s.registry)
	if cfg.InternalAPIToken != "" {
		sum := sha256.Sum256([]byte(cfg.InternalAPIToken))
		s.internalTokenSum = sum[:]
	}

	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.wire(ctx, o); err != nil {
		return nil, err
	}

	gin.SetMode(gin.ReleaseMode)
	s.engine = gin.New()
	s.engine.HandleMethodNotAllowed = true
	s.engine.RedirectTrailingSlash = false // no redirects, ever
	s.engine.RedirectFixedPath = false
	// The remote sits behind Forge's proxy or the vendor's load balancer; we do
	// not derive anything from client IPs, so trust no forwarding header.
	if err := s.engine.SetTrustedProxies(nil); err != nil {
		return nil, err
	}
	// recovery twice: inside accessLog, so that a panicking request is
	// answered before it is logged and counted; outside, for the rest.
	s.engine.Use(s.recovery, s.requestIDs, s.accessLog, s.recovery)
	s.routes(s.engine)
	return s, nil
}

// Run serves on cfg.ListenAddr until ctx ends, then shuts down gracefully:
// in-flight requests finish, background work stops, the store is closed.
// onListen, when set, learns the bound address (tests listen on port 0).
func (s *Server) Run(ctx context.Context, onListen func(net.Addr)) error {
	defer s.Close()
	ln, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("server: LISTEN_ADDR %s: %w", s.cfg.ListenAddr, err)
	}
	srv := &http.Server{
		Handler:           s.engine,
		ReadHeaderTimeout: s.timeouts.ReadHeader,
		ReadTimeout:       s.timeouts.Read,
		WriteTimeout:      s.timeouts.Write,
		IdleTimeout:       s.timeouts.Idle,
		MaxHeaderBytes:    httplimits.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	s.log.Info("server listening", zap.String("addr", ln.Addr().String()),
		zap.String("app_id", s.cfg.AppID), zap.Bool("weavy", s.broker != nil))
	if onListen != nil {
		onListen(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// Close releases everything New acquired. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(s.close)
}

// String names the replica by its listen address. fmt prints a struct's
// unexported fields without their methods, so printing the Server would show
// the secrets of its Config in clear.
func (s *Server) String() string { return "server.Server{" + s.cfg.ListenAddr + "}" }

// Format prints String for every verb (%v %+v %#v %s %q %x …).
func (s *Server) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

func (s *Server) close() {
	if s.scheduler != nil {
		// The uninstall purges stop (each stays stored for the next start),
		// then the Queue's jobs, before the store closes.
		s.scheduler.Close()
	}
	if s.queue != nil {
		s.queue.Close() // running jobs finish (bounded by their timeout) before the store closes
	}
	if s.verifier != nil {
		s.verifier.Close()
	}
	if s.fleet != nil {
		s.fleet.Close()
	}
	if s.kv != nil {
		if err := s.kv.Close(); err != nil {
			s.log.Warn("closing store", zap.Error(err))
		}
	}
}
