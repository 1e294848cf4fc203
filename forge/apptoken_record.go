package forge

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"time"
)

// appTokenV1 starts a stored app token in binary form (the store seals it):
//
//	appTokenV1 | flags | Exp | UpdatedAt | len APIBaseURL | APIBaseURL | len CloudID | CloudID | token
//
// Times are 8-byte big-endian unix nanoseconds, lengths uvarints; the token
// takes the rest. Flag bit 0 is FromUser. With flag bit 1 the token, a JWT
// (as Forge's are), is stored as its three segments decoded from base64url,
// the first two length-prefixed: a quarter smaller. Only a token that encodes
// back to exactly the same string is packed; any other is stored as it is.
//
// The installation id is not repeated: it is the record's key (and the store
// seals the record to its key). About 0.85 KB for Forge's 1 KB tokens, so
// that four records fit a 4 KiB page of the embedded store.
const appTokenV1 byte = 1

var errAppTokenRecord = errors.New("malformed app token record")

// appTokenNanos is t in unix nanoseconds, clamped to what an int64 holds:
// the zero time of a token without an expiry stays before every real time.
func appTokenNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func encodeAppToken(t AppToken) []byte {
	buf := make([]byte, 0, 2+16+2*binary.MaxVarintLen64+len(t.APIBaseURL)+len(t.CloudID)+len(t.Token))
	var flags byte
	if t.FromUser {
		flags |= appTokenFromUser
	}
	packed, ok := packJWT(t.Token)
	if ok {
		flags |= appTokenPacked
	}
	buf = append(buf, appTokenV1, flags)
	buf = binary.BigEndian.AppendUint64(buf, uint64(appTokenNanos(t.Exp)))
	buf = binary.BigEndian.AppendUint64(buf, uint64(appTokenNanos(t.UpdatedAt)))
	buf = binary.AppendUvarint(buf, uint64(len(t.APIBaseURL)))
	buf = append(buf, t.APIBaseURL...)
	buf = binary.AppendUvarint(buf, uint64(len(t.CloudID)))
	buf = append(buf, t.CloudID...)
	if ok {
		return append(buf, packed...)
	}
	return append(buf, t.Token...)
}

const (
	appTokenFromUser byte = 1 << iota
	appTokenPacked
)

var b64 = base64.RawURLEncoding

// packJWT is token as its three segments decoded, the first two with their
// lengths, when token is three base64url segments that encode back to
// exactly token.
func packJWT(token string) ([]byte, bool) {
	h, rest, ok1 := strings.Cut(token, ".")
	p, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return nil, false
	}
	out := make([]byte, 0, b64.DecodedLen(len(token))+2*binary.MaxVarintLen64)
	for i, seg := range [3]string{h, p, sig} {
		n := b64.DecodedLen(len(seg))
		if i < 2 {
			out = binary.AppendUvarint(out, uint64(n))
		}
		start := len(out)
		out = append(out, make([]byte, n)...)
		if k, err := b64.Decode(out[start:], []byte(seg)); err != nil || k != n ||
			b64.EncodeToString(out[start:]) != seg {
			return nil, false
		}
	}
	return out, true
}

// unpackJWT is the token packJWT packed into b.
func unpackJWT(b []byte) (string, bool) {
	var segs [2][]byte
	for i := range segs {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", false
		}
		segs[i], b = b[k:k+int(n)], b[k+int(n):]
	}
	out := make([]byte, 0, b64.EncodedLen(len(segs[0]))+b64.EncodedLen(len(segs[1]))+b64.EncodedLen(len(b))+2)
	out = b64.AppendEncode(out, segs[0])
	out = append(out, '.')
	out = b64.AppendEncode(out, segs[1])
	out = append(out, '.')
	return string(b64.AppendEncode(out, b)), true
}

// decodeAppToken reads the record stored for installation inst.
func decodeAppToken(inst string, data []byte) (AppToken, error) {
	if len(data) < 2+16 || data[0] != appTokenV1 || data[1]&^(appTokenFromUser|appTokenPacked) != 0 {
		return AppToken{}, errAppTokenRecord
	}
	t := AppToken{
		InstallationID: inst,
		FromUser:       data[1]&appTokenFromUser != 0,
		Exp:            time.Unix(0, int64(binary.BigEndian.Uint64(data[2:]))).UTC(),
		UpdatedAt:      time.Unix(0, int64(binary.BigEndian.Uint64(data[10:]))).UTC(),
	}
	rest := data[18:]
	var ok bool
	if t.APIBaseURL, rest, ok = appTokenField(rest); !ok {
		return AppToken{}, errAppTokenRecord
	}
	if t.CloudID, rest, ok = appTokenField(rest); !ok {
		return AppToken{}, errAppTokenRecord
	}
	if data[1]&appTokenPacked == 0 {
		t.Token = string(rest)
	} else if t.Token, ok = unpackJWT(rest); !ok {
		return AppToken{}, errAppTokenRecord
	}
	return t, nil
}

// appTokenField reads a uvarint length and that many bytes.
func appTokenField(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}
