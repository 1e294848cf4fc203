// Package memory is a store.KV held in one process: for tests and
// single-replica development (STORE_URL memory://).
package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/internal/record"
)

const (
	// reapEvery is how often the reaper looks for expired records.
	reapEvery = time.Minute
	// reapBatch bounds the records one pass looks at, and so how long it
	// holds the lock every call waits on.
	reapBatch = 10_000
)

// errClosed is what every method returns after Close.
var errClosed = fmt.Errorf("%w: memory store closed", store.ErrUnavailable)

// Store is a KV held in one process. Expired records are treated as absent
// at once, removed when next touched, and reaped in the background (up to
// reapBatch records looked at each minute), so records nobody touches again
// do not pile up. Close stops the reaper.
type Store struct {
	now func() time.Time

	mu sync.Mutex
	m  map[string]memEntry // nil once closed

	stopOnce sync.Once
	stop     chan struct{} // closed by Close
	done     chan struct{} // closed when the reaper has returned
}

type memEntry struct {
	value   []byte
	expires time.Time // zero: never
}

func (e memEntry) live(now time.Time) bool {
	return e.expires.IsZero() || now.Before(e.expires)
}

// New returns an empty Store reading time from now (time.Now when nil), its
// reaper started.
func New(now func() time.Time) *Store {
	return newStore(now, reapEvery, reapBatch)
}

func newStore(now func() time.Time, every time.Duration, batch int) *Store {
	if now == nil {
		now = time.Now
	}
	m := &Store{now: now, m: make(map[string]memEntry), stop: make(chan struct{}), done: make(chan struct{})}
	go m.reap(every, batch)
	return m
}

// reap runs reapOnce every interval until Close.
func (m *Store) reap(every time.Duration, batch int) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.reapOnce(batch)
		}
	}
}

// reapOnce looks at up to batch records and removes the expired ones among
// them; it returns how many it removed. Go starts each walk of a map at a
// random place, so passes that stop early still reach every record in time.
func (m *Store) reapOnce(batch int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	seen, removed := 0, 0
	for k, e := range m.m {
		if seen == batch {
			break
		}
		seen++
		if !e.live(now) {
			delete(m.m, k)
			removed++
		}
	}
	return removed
}

// lookup returns the live entry for key, removing it if it has expired.
// The caller holds m.mu.
func (m *Store) lookup(key string, now time.Time) (memEntry, bool) {
	e, ok := m.m[key]
	if ok && !e.live(now) {
		delete(m.m, key)
		return memEntry{}, false
	}
	return e, ok
}

func (m *Store) set(key string, value []byte, ttl time.Duration, now time.Time) {
	e := memEntry{value: bytes.Clone(value)}
	if e.value == nil {
		e.value = []byte{} // a stored value is never nil
	}
	if ttl > 0 {
		e.expires = now.Add(ttl)
	}
	m.m[key] = e
}

// Get returns a copy of the value stored under key, or store.ErrNotFound.
func (m *Store) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return nil, errClosed
	}
	e, ok := m.lookup(key, m.now())
	if !ok {
		return nil, store.ErrNotFound
	}
	return bytes.Clone(e.value), nil
}

// Put stores a copy of value under key, replacing any record and its ttl.
func (m *Store) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := record.CheckWrite(key, ttl); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return errClosed
	}
	m.set(key, value, ttl, m.now())
	return nil
}

// Update runs fn under the store's lock, so it is atomic with every other call.
func (m *Store) Update(ctx context.Context, key string, fn store.UpdateFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := record.CheckWrite(key, 0); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return errClosed
	}
	now := m.now()
	e, ok := m.lookup(key, now)
	value, ttl, err := fn(bytes.Clone(e.value), ok)
	switch {
	case errors.Is(err, store.Keep):
		return nil
	case errors.Is(err, store.Remove):
		delete(m.m, key)
		return nil
	case err != nil:
		return err
	}
	if err := record.CheckWrite(key, ttl); err != nil {
		return err
	}
	m.set(key, value, ttl, now)
	return nil
}

// Delete removes key; a missing key is not an error.
func (m *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return errClosed
	}
	delete(m.m, key)
	return nil
}

// Scan calls fn on a snapshot of the matching live records, taken under the
// lock and visited outside it, so a misbehaving fn cannot deadlock the store.
func (m *Store) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type record struct {
		key   string
		value []byte
	}
	var snapshot []record
	m.mu.Lock()
	if m.m == nil {
		m.mu.Unlock()
		return errClosed
	}
	now := m.now()
	for k, e := range m.m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if !e.live(now) {
			delete(m.m, k)
			continue
		}
		snapshot = append(snapshot, record{k, bytes.Clone(e.value)})
	}
	m.mu.Unlock()

	for _, r := range snapshot {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(r.key, r.value); err != nil {
			return err
		}
	}
	return nil
}

// Ping reports whether the store is still open.
func (m *Store) Ping(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return errClosed
	}
	return nil
}

// Close stops the reaper and drops every record. Later calls fail with
// store.ErrUnavailable; closing twice is harmless.
func (m *Store) Close() error {
	m.stopOnce.Do(func() { close(m.stop) })
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m = nil
	return nil
}
