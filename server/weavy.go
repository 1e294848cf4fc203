package server

import (
	"context"
	"time"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/scheduler"
	"github.com/forge-remote/forge-remote/weavy"
)

// setupWeavy registers the token resolver: backed by Weavy when configured,
// else answering a clear 503 that names the missing variables.
func (s *Server) setupWeavy() error {
	if s.cfg.WeavyURL == "" {
		// The payload is still decoded, so a bad one is a 400 as with Weavy.
		notConfigured := resolvers.Decoded(func(context.Context, *forge.Invocation, struct{}) (any, error) {
			return nil, errWeavyNotConfigured
		})
		s.resolvers.Register(resolvers.TokenKey, notConfigured)
		s.resolvers.Register(resolvers.ChatKey, notConfigured)
		s.log.Warn("WEAVY_URL is not set: the token and chat resolvers answer 503 weavy_not_configured")
		return nil
	}
	client, err := weavy.NewClient(s.cfg.WeavyURL, string(s.cfg.WeavyAPIKey), weavy.ClientOptions{
		Timeout:    s.cfg.WeavyTimeout,
		Registerer: s.registry,
		Now:        s.now,
	})
	if err != nil {
		return err
	}
	s.weavy = client
	var locker weavy.Locker
	if sharedRedis(s.kv) != nil {
		locker = weavy.NewStoreLocker(s.kv) // one mint per user across the replicas
	}
	s.broker = weavy.NewBroker(client, s.kv, weavy.BrokerOptions{
		TTL:        s.cfg.WeavyTokenTTL,
		Now:        s.now,
		Logger:     s.log.Named("weavy"),
		Registerer: s.registry,
		Locker:     locker,
		// A mint is at most two Weavy calls (one retry when Weavy hands back
		// the held token); past that the holder is taken for dead.
		LockTTL: 2*s.cfg.WeavyTimeout + 5*time.Second,
		// A user a mint just created in Weavy has no name: sync the profile
		// off the request path. The scheduler exists by the time anyone mints.
		OnMint: func(inst, uid string) { s.scheduler.UserMinted(inst, uid) },
	})
	s.resolvers.Register(resolvers.TokenKey, resolvers.Token(s.broker, s.cfg.WeavyUIDScope, s.now))
	s.chat = chat.New(client, s.kv, chat.Options{
		Lease: s.cfg.ChatLease, Now: s.now, Logger: s.log.Named("chat"), Registerer: s.registry,
	})
	s.resolvers.Register(resolvers.ChatKey, resolvers.Chat(s.chat, s.cfg.WeavyUIDScope))
	return nil
}

// setupScheduler builds the trigger handlers and the job runner: profile sync
// (when Weavy is configured), housekeeping, and the Connect clientKey capture
// (when CONNECT_APP_KEY is set).
func (s *Server) setupScheduler() error {
	products := forge.NewClient(s.appTokens, forge.ClientOptions{
		Now: s.now, Logger: s.log.Named("confluence"), Registerer: s.registry,
	})
	connectJob, err := s.setupConnect(products)
	if err != nil {
		return err
	}
	qo := scheduler.QueueOptions{
		KV:          s.kv,
		AppTokens:   s.appTokens,
		Products:    products,
		UIDScope:    s.cfg.WeavyUIDScope,
		Concurrency: s.cfg.JobConcurrency,
		Now:         s.now,
		Logger:      s.log.Named("scheduler"),
		Registerer:  s.registry,
	}
	var o scheduler.Options
	if s.weavy != nil {
		qo.Weavy = s.weavy
		qo.Directories = s.chat
		// Memberships past their lease go with each installation's hourly jobs.
		o.Jobs = append(o.Jobs, scheduler.Job{Name: "chat_leases", Run: s.chat.PruneLeases})
		o.Purger = purgers{s.chat, s.broker}
	}
	if s.fleet != nil {
		// The fleet purges the broker and chat too, then tells the other replicas.
		o.Purger = s.fleet
	}
	if s.connect != nil {
		// Install/upgrade events and the hourly trigger queue every job: the
		// capture rides on them, and a Forge uninstall purges its mapping.
		o.Jobs = append(o.Jobs, *connectJob)
		o.Purger = purgers{o.Purger, s.connect.store}
	}
	o.Queue = scheduler.NewQueue(qo)
	s.scheduler = scheduler.New(o)
	if s.fleet != nil {
		s.fleet.setJobs(s.scheduler)
	}
	return nil
}
