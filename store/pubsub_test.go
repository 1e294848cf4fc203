package store_test

import (
	"context"
	"testing"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
)

// sharedKV is a KV whose backend has publish/subscribe, as redis has.
type sharedKV struct {
	store.KV
	published []string
}

func (s *sharedKV) Publish(_ context.Context, channel string, msg []byte) error {
	s.published = append(s.published, channel+":"+string(msg))
	return nil
}

func (s *sharedKV) Subscribe(context.Context, string, func()) (<-chan []byte, func()) {
	return nil, func() {}
}

func TestPubSubOf(t *testing.T) {
	mem := memory.New(nil)
	defer mem.Close()
	if ps, ok := store.PubSubOf(mem); ok || ps != nil {
		t.Errorf("PubSubOf(memory) = %v, %v; want none", ps, ok)
	}
	if ps, ok := store.PubSubOf(newSealed(t, mem)); ok || ps != nil {
		t.Errorf("PubSubOf(sealed memory) = %v, %v; want none", ps, ok)
	}

	shared := &sharedKV{KV: mem}
	for _, kv := range []store.KV{shared, newSealed(t, shared)} {
		ps, ok := store.PubSubOf(kv)
		if !ok {
			t.Fatalf("PubSubOf(%T) found none", kv)
		}
		if err := ps.Publish(t.Context(), "c", []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	if len(shared.published) != 2 {
		t.Errorf("published %q; want both through the backend's PubSub", shared.published)
	}
}
