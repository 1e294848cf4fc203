package confluencescale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/forge-remote/forge-remote/store"
)

// KV is an in-process store.KV whose keys are held in a tree of their
// '/'-separated segments, so that a Scan of one installation's users looks
// at that installation's records only. The server's memory store walks
// every record on each Scan, which with a million users and 10,000
// installations scanning each hour would be the whole run's cost: this is
// the one part of the run that stands in for the server's (bolt, Redis
// index by prefix too). Expired records are dropped when touched, and by
// Reap.
type KV struct {
	now    func() time.Time
	mu     sync.Mutex
	root   *node
	n      int
	closed bool
}

var errClosed = fmt.Errorf("%w: confluencescale KV closed", store.ErrUnavailable)

type node struct {
	kids    map[string]*node
	has     bool
	value   []byte
	expires time.Time
}

// NewKV returns an empty KV reading time from now.
func NewKV(now func() time.Time) *KV { return &KV{now: now, root: &node{}} }

var _ store.KV = (*KV)(nil)

func (k *KV) find(key string, create bool) *node {
	n := k.root
	for seg := range strings.SplitSeq(key, "/") {
		c := n.kids[seg]
		if c == nil {
			if !create {
				return nil
			}
			if n.kids == nil {
				n.kids = map[string]*node{}
			}
			c = &node{}
			n.kids[seg] = c
		}
		n = c
	}
	return n
}

func (n *node) live(now time.Time) bool {
	return n.has && (n.expires.IsZero() || now.Before(n.expires))
}

func (k *KV) set(n *node, v []byte, ttl time.Duration, now time.Time) {
	if !n.has {
		k.n++
	}
	n.has, n.value, n.expires = true, bytes.Clone(v), time.Time{}
	if n.value == nil {
		n.value = []byte{}
	}
	if ttl > 0 {
		n.expires = now.Add(ttl)
	}
}

func (k *KV) clear(n *node) {
	if n.has {
		k.n--
	}
	n.has, n.value = false, nil
}

func (k *KV) Get(ctx context.Context, key string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, errClosed
	}
	n := k.find(key, false)
	if n == nil || !n.live(k.now()) {
		return nil, store.ErrNotFound
	}
	return bytes.Clone(n.value), nil
}

var errNegativeTTL = errors.New("confluencescale: negative ttl or empty key")

func (k *KV) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl < 0 || key == "" {
		return errNegativeTTL
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return errClosed
	}
	k.set(k.find(key, true), value, ttl, k.now())
	return nil
}

func (k *KV) Update(ctx context.Context, key string, fn store.UpdateFunc) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return errClosed
	}
	now := k.now()
	n := k.find(key, true)
	var old []byte
	exists := n.live(now)
	if exists {
		old = bytes.Clone(n.value)
	}
	v, ttl, err := fn(old, exists)
	switch {
	case errors.Is(err, store.Keep):
		return nil
	case errors.Is(err, store.Remove):
		k.clear(n)
		return nil
	case err != nil:
		return err
	case ttl < 0:
		return errNegativeTTL
	}
	k.set(n, v, ttl, now)
	return nil
}

func (k *KV) Delete(ctx context.Context, key string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return errClosed
	}
	if n := k.find(key, false); n != nil {
		k.clear(n)
	}
	return nil
}

// Scan visits a snapshot of the live records under prefix, outside the lock.
func (k *KV) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	type rec struct {
		key   string
		value []byte
	}
	var snap []rec
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return errClosed
	}
	now := k.now()
	// Walk the whole segments of the prefix, then filter on its last part.
	dir, last := "", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir, last = prefix[:i], prefix[i+1:]
	}
	start := k.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = k.find(dir, false)
	}
	var walk func(n *node, key string)
	walk = func(n *node, key string) {
		if n.live(now) {
			snap = append(snap, rec{key, bytes.Clone(n.value)})
		}
		for seg, c := range n.kids {
			walk(c, key+"/"+seg)
		}
	}
	if start != nil {
		for seg, c := range start.kids {
			if strings.HasPrefix(seg, last) {
				key := seg
				if dir != "" || strings.Contains(prefix, "/") {
					key = dir + "/" + seg
				}
				walk(c, key)
			}
		}
	}
	k.mu.Unlock()
	for _, r := range snap {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(r.key, r.value); err != nil {
			return err
		}
	}
	return nil
}

// Reap drops every expired record and the empty branches left; it returns
// the records left.
func (k *KV) Reap() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	var reap func(n *node) bool // reports whether n is empty now
	reap = func(n *node) bool {
		if n.has && !n.live(now) {
			k.clear(n)
		}
		for seg, c := range n.kids {
			if reap(c) {
				delete(n.kids, seg)
			}
		}
		return !n.has && len(n.kids) == 0
	}
	reap(k.root)
	return k.n
}

func (k *KV) Ping(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return errClosed
	}
	return nil
}

// Close drops every record; later calls fail with store.ErrUnavailable.
func (k *KV) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed, k.root, k.n = true, &node{}, 0
	return nil
}
