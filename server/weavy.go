package server

import (
	"context"
	"encoding/json"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/weavy"
)

// setupWeavy registers the token resolver: backed by Weavy when configured,
// else answering a clear 503 that names the missing variables.
func (s *Server) setupWeavy() error {
	if s.cfg.WeavyURL == "" {
		s.resolvers.Register(resolvers.TokenKey, func(context.Context, *forge.Invocation, json.RawMessage) (any, error) {
			return nil, errWeavyNotConfigured
		})
		s.log.Warn("WEAVY_URL is not set: the token resolver answers 503 weavy_not_configured")
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
	s.broker = weavy.NewBroker(client, s.kv, weavy.BrokerOptions{
		TTL:        s.cfg.WeavyTokenTTL,
		Now:        s.now,
		Logger:     s.log.Named("weavy"),
		Registerer: s.registry,
	})
	s.resolvers.Register(resolvers.TokenKey, resolvers.Token(s.broker, s.cfg.WeavyUIDScope, s.now))
	return nil
}
