package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// errMemoryClosed is what every Memory method returns after Close.
var errMemoryClosed = fmt.Errorf("%w: memory store closed", ErrUnavailable)

// Memory is a KV held in one process: for tests and single-replica development.
// Expired records are treated as absent at once and removed when next touched.
type Memory struct {
	now func() time.Time

	mu sync.Mutex
	m  map[string]memEntry // nil once closed
}

type memEntry struct {
	value   []byte
	expires time.Time // zero: never
}

func (e memEntry) live(now time.Time) bool {
	return e.expires.IsZero() || now.Before(e.expires)
}

// NewMemory returns an empty Memory reading time from now (time.Now when nil).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, m: make(map[string]memEntry)}
}

// lookup returns the live entry for key, removing it if it has expired.
// The caller holds m.mu.
func (m *Memory) lookup(key string, now time.Time) (memEntry, bool) {
	e, ok := m.m[key]
	if ok && !e.live(now) {
		delete(m.m, key)
		return memEntry{}, false
	}
	return e, ok
}

func (m *Memory) set(key string, value []byte, ttl time.Duration, now time.Time) {
	e := memEntry{value: bytes.Clone(value)}
	if e.value == nil {
		e.value = []byte{} // a stored value is never nil
	}
	if ttl > 0 {
		e.expires = now.Add(ttl)
	}
	m.m[key] = e
}

// Get returns a copy of the value stored under key, or ErrNotFound.
func (m *Memory) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return nil, errMemoryClosed
	}
	e, ok := m.lookup(key, m.now())
	if !ok {
		return nil, ErrNotFound
	}
	return bytes.Clone(e.value), nil
}

// Put stores a copy of value under key, replacing any record and its ttl.
func (m *Memory) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkWrite(key, ttl); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return errMemoryClosed
	}
	m.set(key, value, ttl, m.now())
	return nil
}

// Update runs fn under the store's lock, so it is atomic with every other call.
func (m *Memory) Update(ctx context.Context, key string, fn UpdateFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkWrite(key, 0); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return errMemoryClosed
	}
	now := m.now()
	e, ok := m.lookup(key, now)
	value, ttl, err := fn(bytes.Clone(e.value), ok)
	switch {
	case errors.Is(err, Keep):
		return nil
	case errors.Is(err, Remove):
		delete(m.m, key)
		return nil
	case err != nil:
		return err
	}
	if err := checkWrite(key, ttl); err != nil {
		return err
	}
	m.set(key, value, ttl, now)
	return nil
}

// Delete removes key; a missing key is not an error.
func (m *Memory) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return errMemoryClosed
	}
	delete(m.m, key)
	return nil
}

// Scan calls fn on a snapshot of the matching live records, taken under the
// lock and visited outside it, so a misbehaving fn cannot deadlock the store.
func (m *Memory) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
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
		return errMemoryClosed
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
func (m *Memory) Ping(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		return errMemoryClosed
	}
	return nil
}

// Close drops every record. Later calls fail with ErrUnavailable; closing
// twice is harmless.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m = nil
	return nil
}
