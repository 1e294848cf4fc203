package server

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/scheduler"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/open"
	"github.com/forge-remote/forge-remote/weavy"
)

// wire is the composition root: it builds the server's parts in dependency
// order, each complete when it is built and given only what exists already.
// Nothing is set on a part after its construction, and no callback reaches a
// part built later. Where a lower part tells a higher one something, the
// lower package declares the interface (weavy.MintObserver).
//
//	store → forge (verifier, app tokens, Confluence client)
//	      → Weavy client → chat service
//	      → scheduler queue (job runner, profile sync)
//	      → broker (tells the queue of first mints)
//	      → Connect bridge → fleet (purges broker and chat, forgets the
//	        queue's jobs) → scheduler service (its uninstall purges through
//	        the fleet, or the broker and chat) → resolvers
//
// New builds the Gin engine on top. On an error the caller closes what was
// built (Server.close skips what was not).
func (s *Server) wire(ctx context.Context, o Options) error {
	var err error
	if s.kv = o.KV; s.kv == nil {
		s.kv, err = open.Store(ctx, open.Options{URL: string(s.cfg.StoreURL), Key: s.cfg.StoreKey.Bytes(), Logger: o.Logger, Now: o.Now})
		if err != nil {
			return err
		}
	}
	pubsub, shared := store.PubSubOf(s.kv) // replicas share the store (Redis)
	// Servers before this one kept Connect's sharedSecret, which nothing
	// read: delete any left, at every start (idempotent), bridge on or off.
	if err := connect.NewStore(s.kv).DropSecrets(ctx); err != nil {
		s.log.Warn("stored Connect shared secrets not deleted; retried at the next start", zap.Error(err))
	}

	s.verifier, err = forge.NewVerifier(ctx, forge.VerifierConfig{
		AppID:      s.cfg.AppID,
		JWKSURL:    s.cfg.JWKSURL,
		HTTPClient: o.HTTPClient,
		Logger:     o.Logger.Named("forge"),
		Registerer: s.registry,
		Now:        o.Now,
	})
	if err != nil {
		return err
	}
	s.appTokens = forge.NewAppTokens(s.kv, forge.AppTokensOptions{
		Now: o.Now, Logger: o.Logger.Named("forge"), Registerer: s.registry,
	})
	// One points budget for the fleet: counted in the shared store.
	s.budget = budget.New(budget.Options{
		KV: s.kv, PointsPerHour: s.cfg.ConfluencePointsPerHour, Pool: s.cfg.ConfluencePool,
		Reserve: s.cfg.ConfluenceReserve,
		Now:     s.now, Logger: s.log.Named("confluence"), Registerer: s.registry,
	})
	products := forge.NewClient(s.appTokens, forge.ClientOptions{
		Now: s.now, Logger: s.log.Named("confluence"), Registerer: s.registry, Budget: s.budget,
		HTTPClient: o.ProductHTTPClient,
	})

	if s.cfg.WeavyURL != "" {
		s.weavy, err = weavy.NewClient(s.cfg.WeavyURL, string(s.cfg.WeavyAPIKey), weavy.ClientOptions{
			Timeout:    s.cfg.WeavyTimeout,
			HTTPClient: o.WeavyHTTPClient,
			Registerer: s.registry,
			Now:        s.now,
		})
		if err != nil {
			return err
		}
		s.chat = chat.New(s.weavy, s.kv, chat.Options{
			Lease: s.cfg.ChatLease, Recheck: s.cfg.ChatRecheck,
			MaxEntries: s.cfg.ChatCacheEntries, MaxApps: s.cfg.ChatCacheEntries, MaxUsers: s.cfg.ChatCacheEntries,
			Uninstalls: uninstalls{s},
			Now:        s.now, Logger: s.log.Named("chat"), Registerer: s.registry,
		})
		s.access = resolvers.NewAccess(products, resolvers.AccessOptions{
			Timeout: o.PageCheckTimeout, Logger: s.log.Named("chat"),
		})
	}

	qo := scheduler.QueueOptions{
		KV:          s.kv,
		AppTokens:   s.appTokens,
		Products:    products,
		UIDScope:    s.cfg.WeavyUIDScope,
		Concurrency: s.cfg.JobConcurrency,
		Resync:      s.cfg.ProfileResync,
		Spread:      spread(s.cfg.ConfluenceSpread),
		Now:         s.now,
		Logger:      s.log.Named("scheduler"),
		Registerer:  s.registry,
	}
	if s.weavy != nil {
		qo.Weavy = s.weavy      // profile sync
		qo.Directories = s.chat // each synced user's directories
	}
	s.queue = scheduler.NewQueue(qo)

	if s.weavy != nil {
		var locker weavy.Locker
		if shared {
			locker = weavy.NewStoreLocker(s.kv) // one mint per user across the replicas
		}
		s.broker = weavy.NewBroker(s.weavy, s.kv, weavy.BrokerOptions{
			TTL:        s.cfg.WeavyTokenTTL,
			Now:        s.now,
			Logger:     s.log.Named("weavy"),
			Registerer: s.registry,
			Locker:     locker,
			LockTTL:    weavy.MintLockTTL(s.cfg.WeavyTimeout),
			// A user a mint just created in Weavy has no name: the queue
			// syncs the profile off the request path.
			Observer: s.queue,
		})
	}

	connectJob, err := s.setupConnect(products)
	if err != nil {
		return err
	}

	if shared {
		s.fleet = startFleet(pubsub, o.Logger.Named("fleet"), s.appTokens, s.broker, s.chat, s.queue)
	}

	so := scheduler.Options{Queue: s.queue, PurgeBackoff: o.PurgeBackoff, PurgeBackoffMax: o.PurgeBackoff}
	if s.weavy != nil {
		// Memberships past their lease go with each installation's hourly jobs.
		so.Jobs = append(so.Jobs, scheduler.Job{Name: "chat_leases", Run: s.chat.PruneLeases})
		so.Purger = purgers{s.chat, s.broker}
	}
	if s.fleet != nil {
		// The fleet purges the broker and chat too, then tells the other replicas.
		so.Purger = s.fleet
	}
	if s.connect != nil {
		// Install/upgrade events and the hourly trigger queue every job: the
		// capture rides on them, and a Forge uninstall purges its mapping.
		so.Jobs = append(so.Jobs, *connectJob)
		so.Purger = purgers{so.Purger, s.connect.store}
	}
	s.scheduler = scheduler.New(so)

	s.registerResolvers()
	return nil
}

// uninstalls hands the chat the scheduler's tombstones and purges. The
// scheduler is made after the chat (it purges through it) and before any
// request is served.
type uninstalls struct{ s *Server }

func (u uninstalls) Uninstalled(ctx context.Context, inst string) (bool, error) {
	return u.s.scheduler.Uninstalled(ctx, inst)
}

func (u uninstalls) PurgeAgain(ctx context.Context, inst string) error {
	return u.s.scheduler.PurgeAgain(ctx, inst)
}

// spread is the scheduler's Spread for CONFLUENCE_SPREAD: on, each
// installation's hourly jobs at its own moment of the hour.
func spread(on bool) func(string, time.Time) time.Duration {
	if !on {
		return nil
	}
	return budget.Delay
}

// registerResolvers registers the token and chat resolvers: backed by the
// broker and the chat service when Weavy is configured. Without WEAVY_URL
// there is neither, and what is missing is the server's configuration, not
// anything the resolvers decide: the server answers for them, a clear 503
// (weavy_not_configured) rather than an unknown resolver.
func (s *Server) registerResolvers() {
	if s.broker == nil {
		// The payload is still decoded: invalid JSON or a non-object is a 400, as
		// with Weavy (a member of the wrong type is not: nothing reads it here).
		notConfigured := resolvers.Decoded(func(context.Context, *forge.Invocation, struct{}) (any, error) {
			return nil, errWeavyNotConfigured
		})
		s.resolvers.Register(resolvers.TokenKey, notConfigured)
		s.resolvers.Register(resolvers.ChatKey, notConfigured)
		s.log.Warn("WEAVY_URL is not set: the token and chat resolvers answer 503 weavy_not_configured")
		return
	}
	s.resolvers.Register(resolvers.TokenKey, resolvers.Token(s.broker, s.cfg.WeavyUIDScope, s.now))
	s.resolvers.Register(resolvers.ChatKey, resolvers.Chat(s.chat, s.cfg.WeavyUIDScope, s.access))
}
