// Package secret holds the values that must never be printed: API keys,
// tokens, encryption keys, passwords in URLs. Whatever prints them (every fmt
// verb, encoding/json, encoding.TextMarshaler users, zap fields) gets a short
// fingerprint instead, enough to tell two settings apart and nothing more.
// The value itself is read by converting: string(s), or s.Bytes().
//
// fmt never calls a method of an unexported struct field: a struct holding a
// secret in one prints it raw with %v. Keep secret fields exported, or give
// the struct its own Format (as server.Server and weavy.Client do).
package secret

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"

	"go.uber.org/zap/zapcore"
)

// Fingerprint identifies s without revealing it: the first 8 hex digits of
// its SHA-256, "" for "". Tokens and keys are random enough that 32 bits of
// their hash tell nothing of them.
func Fingerprint(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// describe is how every secret prints.
func describe(fingerprint string) string {
	if fingerprint == "" {
		return "(unset)"
	}
	return "(secret " + fingerprint + ")"
}

// String is a secret: an API key, a token, a shared secret, an encryption
// key's bytes.
type String string

// Bytes is the secret as bytes, nil when unset.
func (s String) Bytes() []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// Fingerprint is Fingerprint(string(s)).
func (s String) Fingerprint() string { return Fingerprint(string(s)) }

// String shows the fingerprint, or (unset).
func (s String) String() string { return describe(s.Fingerprint()) }

// GoString is String, so that %#v does not print the value either.
func (s String) GoString() string { return s.String() }

// Format prints String for every verb (%v %+v %#v %s %q %x …).
func (s String) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// MarshalText makes text encoders write String.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalJSON makes encoding/json (and zap.Reflect) write String.
func (s String) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// LogValue makes log/slog log String.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalLogObject makes zap.Any and zap.Object log the fingerprint only.
func (s String) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("fingerprint", s.Fingerprint())
	return nil
}

// URL is a URL that may carry a password (redis://user:password@host). It
// prints with the password replaced by xxxxx, as url.URL.Redacted does, so
// the rest stays readable.
type URL string

// String is the URL without its password; a URL that does not parse is not
// shown at all (where its password would be cannot be told).
func (u URL) String() string {
	p, err := url.Parse(string(u))
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// GoString is String, so that %#v does not print the password either.
func (u URL) GoString() string { return u.String() }

// Format prints String for every verb (%v %+v %#v %s %q %x …).
func (u URL) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, u.String()) }

// MarshalText makes text encoders, encoding/json and slog write String
// (zap.Any uses String).
func (u URL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }
