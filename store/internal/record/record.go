// Package record is the on-disk form the bolt and redis backends share: an
// expiry header before each payload, and the checks every backend makes before
// a write.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// HeaderSize is the size of the expiry that precedes every payload:
// big-endian unix nanoseconds, 0 for none.
const HeaderSize = 8

// Encode returns the record for value: its expiry (now+ttl, none when ttl is
// 0) then value.
func Encode(value []byte, ttl time.Duration, now time.Time) []byte {
	var expires int64
	if ttl > 0 {
		expires = now.Add(ttl).UnixNano()
	}
	raw := make([]byte, HeaderSize, HeaderSize+len(value))
	binary.BigEndian.PutUint64(raw, uint64(expires))
	return append(raw, value...)
}

// Decode splits a record into its expiry and payload, which aliases raw; ok
// is false when raw is too short to be a record.
func Decode[T ~[]byte | ~string](raw T) (expires int64, payload T, ok bool) {
	if len(raw) < HeaderSize {
		return 0, payload, false
	}
	var header [HeaderSize]byte
	copy(header[:], raw[:HeaderSize])
	return int64(binary.BigEndian.Uint64(header[:])), raw[HeaderSize:], true
}

// Live reports whether a record expiring at expires (0: never) is live at now.
func Live(expires int64, now time.Time) bool {
	return expires == 0 || now.UnixNano() < expires
}

// CheckWrite rejects what no backend can store: bbolt refuses empty keys, and
// a negative ttl is a caller bug, not a request for an already-expired record.
func CheckWrite(key string, ttl time.Duration) error {
	if key == "" {
		return errors.New("store: empty key")
	}
	if ttl < 0 {
		return fmt.Errorf("store: negative ttl %v for key %q", ttl, key)
	}
	return nil
}
