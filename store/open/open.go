// Package open opens the store STORE_URL names: it is the one package that
// links every backend, so that importing package store links none.
package open

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/bolt"
	"github.com/forge-remote/forge-remote/store/internal/sealkey"
	"github.com/forge-remote/forge-remote/store/memory"
	"github.com/forge-remote/forge-remote/store/redis"
)

// Options configure Store. URL and Key come from STORE_URL and STORE_KEY.
type Options struct {
	// URL is bolt://<path> (relative, or absolute as bolt:///var/lib/x.db),
	// redis://host:port/db or rediss://…, or memory://.
	URL string
	// Key is the 32-byte sealing key. Nil means: a random key for memory://,
	// the key file <path>.key beside a bolt database (created on first use).
	// Redis requires it, since replicas must share it.
	Key    []byte
	Logger *zap.Logger      // nil: no logs
	Now    func() time.Time // nil: time.Now
}

// Store opens the backend STORE_URL names and wraps it in store.Sealed, so
// every value is sealed at rest whatever the backend. Closing the result
// closes the backend.
func Store(ctx context.Context, o Options) (store.KV, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	log := o.Logger.Named("store")
	scheme, rest, ok := strings.Cut(o.URL, "://")
	if !ok || scheme == "" {
		return nil, fmt.Errorf("store: STORE_URL %q is not a URL; want bolt://<path>, redis://host:port/db or memory://", o.URL)
	}
	if o.Key != nil && len(o.Key) != store.KeySize {
		return nil, fmt.Errorf("store: STORE_KEY must be %d bytes, got %d", store.KeySize, len(o.Key))
	}

	var (
		backend store.KV
		key     = o.Key
		err     error
	)
	switch strings.ToLower(scheme) {
	case "memory":
		if rest != "" {
			return nil, fmt.Errorf("store: STORE_URL %q: memory:// takes no path", o.URL)
		}
		if key == nil {
			key = sealkey.New() // the records die with the process, and so may the key
		}
		backend = memory.New(o.Now)
	case "bolt":
		if rest == "" || strings.ContainsAny(rest, "?#") {
			return nil, fmt.Errorf("store: STORE_URL %q: want bolt://<path to a database file>", o.URL)
		}
		b, err := bolt.Open(rest, o.Now)
		if err != nil {
			return nil, err
		}
		backend = b
		// The key file is read or created only once the database lock is
		// held, so two processes cannot race to create different keys.
		if key == nil {
			if key, err = boltKeyFile(rest+".key", log); err != nil {
				_ = b.Close()
				return nil, err
			}
		}
	case "redis", "rediss":
		if key == nil {
			return nil, errors.New("store: STORE_KEY is required with a redis STORE_URL (replicas must share it)")
		}
		r, err := redis.Open(ctx, o.URL, redis.Options{Now: o.Now, Log: log})
		if err != nil {
			return nil, err
		}
		backend = r
	default:
		return nil, fmt.Errorf("store: STORE_URL scheme %q is not supported; want bolt, redis, rediss or memory", scheme)
	}

	if err := checkSchema(ctx, backend, log); err != nil {
		_ = backend.Close()
		return nil, err
	}
	sealed, err := store.NewSealed(backend, key)
	if err != nil {
		_ = backend.Close()
		return nil, err
	}
	return sealed, nil
}

// checkSchema refuses a store whose layout this server does not know, and
// marks a new one with the version it writes. A store that cannot be reached
// (Redis down at start) is not a reason to refuse to start, as everywhere
// else: it is logged, and its version left unchecked.
func checkSchema(ctx context.Context, backend store.KV, log *zap.Logger) error {
	written, err := store.CheckSchema(ctx, backend)
	switch {
	case errors.Is(err, store.ErrUnavailable):
		log.Warn("store unavailable: its schema version was not checked", zap.Error(err))
		return nil
	case err != nil:
		return err
	case written:
		log.Info("store schema version written", zap.String("key", store.SchemaKey), zap.Int("version", store.SchemaVersion))
	}
	return nil
}

// boltKeyFile reads the sealing key kept beside a bolt database, creating it
// (0600, base64 of 32 random bytes) on first start. A file others could read
// is refused rather than silently tightened: the key may already have leaked.
func boltKeyFile(path string, log *zap.Logger) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		return createKeyFile(f, path, log)
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("store: create key file: %w", err)
	}

	if f, err = os.Open(path); err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("store: key file %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&^0o600 != 0 {
		return nil, fmt.Errorf("store: key file %s has mode %#o, looser than 0600; fix with chmod 600 (and rotate the key if it may have been read)", path, perm)
	}
	text, err := io.ReadAll(io.LimitReader(f, 1<<10))
	if err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	return sealkey.Parse(string(text), "key file "+path)
}

func createKeyFile(f *os.File, path string, log *zap.Logger) ([]byte, error) {
	key := sealkey.New()
	_, err := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// A partial key file would make the next start fail; leave none.
		_ = os.Remove(path)
		return nil, fmt.Errorf("store: write key file: %w", err)
	}
	log.Info("store key file created", zap.String("path", path))
	return key, nil
}
