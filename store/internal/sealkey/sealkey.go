// Package sealkey reads and makes the 32-byte keys values are sealed with,
// for STORE_KEY (package store) and a bolt database's key file (store/open).
package sealkey

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// Size is the length of a sealing key: AES-256.
const Size = 32

// Parse decodes base64 (standard or URL alphabet, padded or not) of exactly
// Size bytes; surrounding whitespace is ignored. name says where s came from
// in errors, which never repeat s.
func Parse(s, name string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("store: %s is empty; want base64 of %d random bytes", name, Size)
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		key, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != Size {
			return nil, fmt.Errorf("store: %s decodes to %d bytes; want %d", name, len(key), Size)
		}
		return key, nil
	}
	return nil, fmt.Errorf("store: %s is not valid base64; want base64 of %d random bytes", name, Size)
}

// New returns a random key.
func New() []byte {
	key := make([]byte, Size)
	rand.Read(key) // never fails (crypto/rand, Go 1.24+)
	return key
}
