package store

import "context"

// PubSub is publish/subscribe among the replicas that share a store: the
// redis backend has it, memory and bolt (one replica) do not. Find it with
// PubSubOf, which sees through Sealed.
//
// Delivery is at most once: a replica that is not subscribed when a message
// is published (restarting, or cut off) never sees it. Use it to hurry things
// along (a cache entry is stale), never as the only record of something.
type PubSub interface {
	// Publish sends msg to every current subscriber of channel, on any
	// replica.
	Publish(ctx context.Context, channel string, msg []byte) error
	// Subscribe delivers the messages published on channel until ctx ends,
	// stop is called or the store is closed; msgs is closed then. A message
	// published after Subscribe returns is delivered. gap, when not nil, is
	// called between two messages each time the subscription is restored
	// (after a lost connection): messages published meanwhile may have been
	// missed, so a subscriber keeping a cache in step must take a gap to
	// mean that anything may have changed.
	Subscribe(ctx context.Context, channel string, gap func()) (msgs <-chan []byte, stop func())
}

// PubSubOf returns the PubSub of kv's backend, and false when it has none
// (the store is not shared). A KV wrapping another passes the inner one's on
// by a PubSub() (PubSub, bool) method, as Sealed does.
func PubSubOf(kv KV) (PubSub, bool) {
	switch kv := kv.(type) {
	case PubSub:
		return kv, true
	case interface{ PubSub() (PubSub, bool) }:
		return kv.PubSub()
	}
	return nil, false
}
