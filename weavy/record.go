package weavy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/ids"
	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/store"
)

// StorePrefix starts the keys of users' stored tokens: StorePrefix +
// installation + "/" + a hash of the uid (see storeKey).
const StorePrefix = "weavy/u/"

// recordV1 starts a stored entry in binary form, the store seals it:
//
//	recordV1 | flags (bit 0: refreshed) | exp (8 bytes, big-endian unix ns) | exp - minted (varint ns) | token
//
// About 45 bytes for a 30-character token. The refreshed flag is stored so
// that other replicas share a refresh; the mint time, because the margin and
// the refresh window are measured from it.
const recordV1 byte = 1

func encodeRecord(e *entry) []byte {
	buf := make([]byte, 0, 2+8+binary.MaxVarintLen64+len(e.tok))
	var flags byte
	if e.refreshed {
		flags = 1
	}
	buf = append(buf, recordV1, flags)
	buf = binary.BigEndian.AppendUint64(buf, uint64(e.exp))
	buf = binary.AppendVarint(buf, e.exp-e.minted)
	return append(buf, e.tok...)
}

// decodeRecord reads a stored entry. ok is false for anything malformed.
func decodeRecord(data []byte) (tok Token, mintedAt time.Time, refreshed, ok bool) {
	if len(data) < 2+8+1 || data[0] != recordV1 || data[1]&^1 != 0 {
		return Token{}, time.Time{}, false, false
	}
	exp := int64(binary.BigEndian.Uint64(data[2:]))
	life, n := binary.Varint(data[10:])
	minted := exp - life
	if n <= 0 || life < 0 || exp < minNanos || exp > maxNanos || minted > exp || minted < minNanos || minted > maxNanos {
		return Token{}, time.Time{}, false, false // minted after expiry, the subtraction overflowed, or a time is out of range
	}
	tok = Token{AccessToken: string(data[10+n:]), ExpiresAt: time.Unix(0, exp)}
	return tok, time.Unix(0, minted), data[1]&1 != 0, true
}

// storeKey is where k's token is stored: 67 bytes for an accountId. Keys are
// in every page of the store, so their length counts as much as the
// record's: the uid is stored as 128 bits of its SHA-256 (see uidSegment),
// the installation as itself, so that an installation's users share a prefix
// (PurgeInstallation scans it).
func storeKey(k userKey) string {
	return installationPrefix(k.inst) + uidSegment(k.uid)
}

// installationPrefix starts the store key of every user of inst.
func installationPrefix(inst string) string {
	return StorePrefix + instSegment(inst) + "/"
}

// uidSegment is uid in a store key: 128 bits of a SHA-256 of it, in
// base64url (22 characters). The same in every process and replica; two
// users of one installation sharing it has a chance of about n²/2¹²⁹, nil for
// any number of users.
func uidSegment(uid string) string {
	h := sha256.New()
	h.Write([]byte("forge-remote/weavy/uid\x00"))
	h.Write([]byte(uid))
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(h.Sum(sum[:0])[:16])
}

// installationARI is how every installation id Forge sends starts.
const installationARI = "ari:cloud:ecosystem::installation/"

// instSegment is inst in a store key, one to one: the bare UUID of an
// installation ARI, or '~' and the escaped id for anything else (a UUID
// never starts with '~'; escaping removes '/', so that one installation's
// prefix never matches another's).
func instSegment(inst string) string {
	if u, ok := strings.CutPrefix(inst, installationARI); ok && ids.IsUUID(u) {
		return u
	}
	return "~" + url.PathEscape(inst)
}

// loadStored returns the stored entry of k, or nil if there is none usable.
func (b *Broker) loadStored(ctx context.Context, k userKey) (*entry, error) {
	data, err := b.kv.Get(ctx, storeKey(k))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case errors.Is(err, store.ErrSealed):
		// Permanent (STORE_KEY changed): minting over it is the only way out.
		logctx.Logger(ctx, b.log).Warn("weavy: stored token cannot be opened, minting a new one",
			zap.String("installation_id", k.inst), zap.String("uid", k.uid), zap.Error(err))
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("weavy: reading stored token: %w", err)
	}
	tok, mintedAt, refreshed, ok := decodeRecord(data)
	if !ok || !validAccessToken(tok.AccessToken) {
		logctx.Logger(ctx, b.log).Warn("weavy: stored token record is malformed, minting a new one",
			zap.String("installation_id", k.inst), zap.String("uid", k.uid))
		return nil, nil
	}
	return newEntry(tok, mintedAt, b.margin, refreshed), nil
}

// persist writes e to the store, expiring with the token. A failure is logged
// only: the token is good and stays in memory.
func (b *Broker) persist(ctx context.Context, k userKey, e *entry) {
	ttl := time.Duration(e.exp - b.now().UnixNano())
	if ttl <= 0 {
		return
	}
	if err := b.kv.Put(ctx, storeKey(k), encodeRecord(e), ttl); err != nil {
		logctx.Logger(ctx, b.log).Warn("weavy: storing token failed, kept in memory only",
			zap.String("installation_id", k.inst), zap.String("uid", k.uid), zap.Error(err))
	}
}
