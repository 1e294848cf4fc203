package connect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/forge-remote/forge-remote/store"
)

// Where a mapping was learnt.
const (
	SourceConnectInstall = "connect_install" // a verified signed Connect install
	SourceAppProperty    = "app_property"    // the reserved app property, read with the app token
)

// Mapping ties a Forge installation to its Connect clientKey. Connect's
// sharedSecret is not kept anywhere: the server signs nothing with it.
type Mapping struct {
	InstallationID string    `json:"installation_id"`
	CloudID        string    `json:"cloud_id,omitempty"`
	ClientKey      string    `json:"client_key"`
	SiteURL        string    `json:"site_url,omitempty"`
	CapturedAt     time.Time `json:"captured_at"`
	Source         string    `json:"source"`
}

// Store keys. Ids are path-escaped: no '/' inside, so no prefix of one
// installation matches another's. No key holds a secret.
const (
	mappingPrefix = "connect/installation/" // + inst → Mapping
	clientPrefix  = "connect/clientkey/"    // + clientKey → inst (the newest installation of the key)
	probePrefix   = "connect/probe/"        // + inst → the app-property reader's state

	// legacySecretPrefix + inst held the installation's Connect sharedSecret,
	// which servers before this one sealed and kept though nothing read it.
	// Nothing is written there any more; DropSecrets deletes what is left.
	legacySecretPrefix = "connect/secret/"
)

func mappingKey(inst string) string { return mappingPrefix + url.PathEscape(inst) }
func clientKeyKey(ck string) string { return clientPrefix + url.PathEscape(ck) }
func probeKey(inst string) string   { return probePrefix + url.PathEscape(inst) }

func legacySecretKey(inst string) string { return legacySecretPrefix + url.PathEscape(inst) }

// Store keeps the mappings in the server's store, sealed like every record.
type Store struct {
	kv store.KV
}

// NewStore returns a Store over kv.
func NewStore(kv store.KV) *Store { return &Store{kv: kv} }

// NormalizeInstallationID makes a bare installation uuid the ARI Forge's
// invocation tokens carry, so that lookups agree whichever side told of it.
func NormalizeInstallationID(id string) string {
	id = strings.TrimSpace(id)
	if id == "" || strings.HasPrefix(id, "ari:") {
		return id
	}
	return "ari:cloud:ecosystem::installation/" + id
}

// Record stores m (InstallationID and ClientKey required). A mapping held
// with the same clientKey keeps its first capture time and source and only
// gains fields it lacked; another clientKey (a site restored from another
// one's backup) replaces it. The clientKey then leads to this installation.
func (s *Store) Record(ctx context.Context, m Mapping) error {
	if m.InstallationID == "" || m.ClientKey == "" {
		return errors.New("connect: a mapping needs an installation id and a clientKey")
	}
	var previous string
	err := s.kv.Update(ctx, mappingKey(m.InstallationID), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		previous = ""
		next := m
		var held Mapping
		if exists && json.Unmarshal(old, &held) == nil && held.ClientKey != "" {
			previous = held.ClientKey
			if held.ClientKey == m.ClientKey {
				next = held
				setIf(&next.CloudID, m.CloudID)
				setIf(&next.SiteURL, m.SiteURL)
				if next == held {
					return nil, 0, store.Keep
				}
			}
		}
		b, err := json.Marshal(next)
		return b, 0, err
	})
	if err != nil {
		return fmt.Errorf("connect: recording mapping: %w", err)
	}
	if err := s.kv.Put(ctx, clientKeyKey(m.ClientKey), []byte(m.InstallationID), 0); err != nil {
		return fmt.Errorf("connect: indexing clientKey: %w", err)
	}
	if previous != "" && previous != m.ClientKey {
		return s.unindex(ctx, previous, m.InstallationID)
	}
	return nil
}

func setIf(dst *string, v string) {
	if *dst == "" && v != "" {
		*dst = v
	}
}

// unindex removes clientKey → inst, unless the key leads elsewhere by now.
func (s *Store) unindex(ctx context.Context, clientKey, inst string) error {
	err := s.kv.Update(ctx, clientKeyKey(clientKey), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if !exists || string(old) != inst {
			return nil, 0, store.Keep
		}
		return nil, 0, store.Remove
	})
	if err != nil {
		return fmt.Errorf("connect: unindexing clientKey: %w", err)
	}
	return nil
}

// ByInstallation returns the installation's mapping; ok is false when none is held.
func (s *Store) ByInstallation(ctx context.Context, inst string) (Mapping, bool, error) {
	b, err := s.kv.Get(ctx, mappingKey(inst))
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrSealed) {
		return Mapping{}, false, nil
	}
	if err != nil {
		return Mapping{}, false, fmt.Errorf("connect: reading mapping: %w", err)
	}
	var m Mapping
	if json.Unmarshal(b, &m) != nil || m.ClientKey == "" {
		return Mapping{}, false, nil
	}
	return m, true, nil
}

// ByClientKey returns the mapping of the newest installation that told of
// clientKey; ok is false when none is held.
func (s *Store) ByClientKey(ctx context.Context, clientKey string) (Mapping, bool, error) {
	if clientKey == "" {
		return Mapping{}, false, nil
	}
	b, err := s.kv.Get(ctx, clientKeyKey(clientKey))
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrSealed) {
		return Mapping{}, false, nil
	}
	if err != nil {
		return Mapping{}, false, fmt.Errorf("connect: reading clientKey index: %w", err)
	}
	m, ok, err := s.ByInstallation(ctx, string(b))
	if err != nil || !ok || m.ClientKey != clientKey {
		return Mapping{}, false, err
	}
	return m, true, nil
}

// List calls fn for every mapping, in no particular order.
func (s *Store) List(ctx context.Context, fn func(Mapping) error) error {
	var all []Mapping
	err := s.kv.Scan(ctx, mappingPrefix, func(_ string, v []byte) error {
		var m Mapping
		if json.Unmarshal(v, &m) == nil && m.InstallationID != "" && m.ClientKey != "" {
			all = append(all, m)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("connect: listing mappings: %w", err)
	}
	for _, m := range all { // fn may call the store: not from inside Scan
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// DropSecrets deletes every Connect sharedSecret an earlier server stored
// (under connect/secret/, whatever STORE_KEY sealed it). The server runs it
// at each start, with or without CONNECT_APP_KEY: it is idempotent (a store
// already clean is one empty prefix scan), needs no schema version change
// (the key was only ever written, never read), and also catches a secret an
// older replica still wrote during a rolling upgrade.
func (s *Store) DropSecrets(ctx context.Context) error {
	if err := store.DeletePrefix(ctx, s.kv, legacySecretPrefix); err != nil {
		return fmt.Errorf("connect: deleting stored shared secrets: %w", err)
	}
	return nil
}

// PurgeInstallation forgets everything held for the installation: mapping,
// clientKey index entry, reader state and a shared secret an earlier server
// may have left (a Forge uninstall).
// It keeps going past a failure so that one bad record does not keep the rest.
func (s *Store) PurgeInstallation(ctx context.Context, inst string) error {
	var errs []error
	m, ok, err := s.ByInstallation(ctx, inst)
	errs = append(errs, err)
	if ok {
		errs = append(errs, s.unindex(ctx, m.ClientKey, inst))
	}
	errs = append(errs,
		s.kv.Delete(ctx, mappingKey(inst)),
		s.kv.Delete(ctx, legacySecretKey(inst)),
		s.kv.Delete(ctx, probeKey(inst)),
	)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("connect: purging installation: %w", err)
	}
	return nil
}
