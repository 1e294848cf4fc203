package server

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// invalidateChannel carries, from the replica that purged an installation to
// all the others, that installation's id (never a token).
const invalidateChannel = "invalidate"

// fleet keeps this replica's in-memory caches honest when replicas share a
// store (Redis: the store has a store.PubSub). The hot paths read memory only: Weavy tokens (Broker) and the app
// token last seen (AppTokens, which skips a token it remembers). Stored
// records are shared already; what another replica deletes is not, so every
// purge is announced on invalidateChannel and each replica drops its copy.
//
// Pub/sub is at most once: a replica cut off from Redis misses what was
// published meanwhile. So when its subscription is restored it drops all it
// holds in memory, at the cost of one store read per user (and one store
// update per installation) afterwards.
type fleet struct {
	pubsub    store.PubSub
	log       *zap.Logger
	appTokens *forge.AppTokens
	broker    *weavy.Broker // nil without Weavy
	chat      *chat.Service // nil without Weavy
	jobs      jobForgetter
	stop      func()
	done      chan struct{}
}

// jobForgetter cancels an installation's jobs on this replica
// (*scheduler.Queue).
type jobForgetter interface{ Forget(installationID string) }

// startFleet subscribes to invalidations; Close stops it.
func startFleet(ps store.PubSub, log *zap.Logger, appTokens *forge.AppTokens, broker *weavy.Broker, ch *chat.Service, jobs jobForgetter) *fleet {
	f := &fleet{pubsub: ps, log: log, appTokens: appTokens, broker: broker, chat: ch, jobs: jobs, done: make(chan struct{})}
	var msgs <-chan []byte
	msgs, f.stop = ps.Subscribe(context.Background(), invalidateChannel, f.forgetAll)
	go f.listen(msgs)
	return f
}

func (f *fleet) listen(msgs <-chan []byte) {
	defer close(f.done)
	for m := range msgs {
		inst := string(m)
		f.appTokens.Forget(inst)
		if f.broker != nil {
			f.broker.ForgetInstallation(inst)
		}
		if f.chat != nil {
			f.chat.ForgetInstallation(inst)
		}
		f.jobs.Forget(inst) // its queued and running jobs stop here too
		f.log.Debug("installation purged by a replica, dropped from memory", zap.String("installation_id", inst))
	}
}

func (f *fleet) forgetAll() {
	f.appTokens.ForgetAll()
	if f.broker != nil {
		f.broker.ForgetAll()
	}
	if f.chat != nil {
		f.chat.ForgetAll()
	}
	f.log.Warn("invalidations may have been missed (Redis subscription restored): dropped the tokens held in memory")
}

// PurgeInstallation is the scheduler's Purger: the Weavy tokens go from the
// store and this replica's memory, then every replica is told to drop its own.
func (f *fleet) PurgeInstallation(ctx context.Context, installationID string) error {
	var errs []error
	if f.chat != nil {
		errs = append(errs, f.chat.PurgeInstallation(ctx, installationID))
	}
	if f.broker != nil {
		errs = append(errs, f.broker.PurgeInstallation(ctx, installationID))
	}
	return errors.Join(append(errs, f.pubsub.Publish(ctx, invalidateChannel, []byte(installationID)))...)
}

// Close ends the subscription and waits for its goroutine.
func (f *fleet) Close() {
	f.stop()
	<-f.done
}
