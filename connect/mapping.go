package connect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/forge-remote/forge-remote/internal/secret"
	"github.com/forge-remote/forge-remote/store"
)

// Where a mapping was learnt.
const (
	SourceConnectInstall = "connect_install" // a verified signed Connect install
	SourceAppProperty    = "app_property"    // the reserved app property, read with the app token
)

// Mapping ties a Forge installation to its Connect clientKey. It never holds
// the shared secret, which is kept apart (see Store.SetSecret).
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
	secretPrefix  = "connect/secret/"       // + inst → the sharedSecret
	probePrefix   = "connect/probe/"        // + inst → the app-property reader's state
)

func mappingKey(inst string) string { return mappingPrefix + url.PathEscape(inst) }
func clientKeyKey(ck string) string { return clientPrefix + url.PathEscape(ck) }
func secretKey(inst string) string  { return secretPrefix + url.PathEscape(inst) }
func probeKey(inst string) string   { return probePrefix + url.PathEscape(inst) }

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
		if err := s.unindex(ctx, previous, m.InstallationID); err != nil {
			return err
		}
		// The old tenant's secret is no secret of this one.
		return s.DropSecret(ctx, m.InstallationID)
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

// SetSecret seals the installation's Connect sharedSecret; it lives as long
// as the mapping (PurgeInstallation) or until Connect's uninstall (DropSecret).
func (s *Store) SetSecret(ctx context.Context, inst string, shared secret.String) error {
	if shared == "" {
		return nil
	}
	if err := s.kv.Put(ctx, secretKey(inst), []byte(shared), 0); err != nil {
		return fmt.Errorf("connect: storing the shared secret: %w", err)
	}
	return nil
}

// HasSecret reports whether a shared secret is held for the installation.
// There is deliberately no way to read it back out of this package's API.
func (s *Store) HasSecret(ctx context.Context, inst string) (bool, error) {
	_, err := s.kv.Get(ctx, secretKey(inst))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrSealed):
		return false, nil
	}
	return false, fmt.Errorf("connect: reading the shared secret: %w", err)
}

// DropSecret forgets the installation's shared secret; the mapping stays.
func (s *Store) DropSecret(ctx context.Context, inst string) error {
	if err := s.kv.Delete(ctx, secretKey(inst)); err != nil {
		return fmt.Errorf("connect: deleting the shared secret: %w", err)
	}
	return nil
}

// InstallationsOf lists the installations mapped to clientKey.
func (s *Store) InstallationsOf(ctx context.Context, clientKey string) ([]string, error) {
	var ids []string
	err := s.List(ctx, func(m Mapping) error {
		if m.ClientKey == clientKey {
			ids = append(ids, m.InstallationID)
		}
		return nil
	})
	return ids, err
}

// PurgeInstallation forgets everything held for the installation: mapping,
// clientKey index entry, shared secret and reader state (a Forge uninstall).
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
		s.kv.Delete(ctx, secretKey(inst)),
		s.kv.Delete(ctx, probeKey(inst)),
	)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("connect: purging installation: %w", err)
	}
	return nil
}
