package forge

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"time"
)

// appTokenV1 starts a stored app token in binary form (the store seals it):
//
//	appTokenV1 | flags (bit 0: FromUser) | Exp | UpdatedAt | len APIBaseURL | APIBaseURL | len CloudID | CloudID | Token
//
// Times are 8-byte big-endian unix nanoseconds, lengths uvarints; the token
// takes the rest. The installation id is not repeated: it is the record's key
// (and the store seals the record to its key). About 1.1 KB for Forge's
// 1 KB tokens, where the JSON form took 1.3 KB: three records fit a 4 KiB page
// of the embedded store instead of two. A JSON record (earlier versions)
// starts with '{' and is still read.
const appTokenV1 byte = 1

var errAppTokenRecord = errors.New("malformed app token record")

// appTokenNanos is t in unix nanoseconds, clamped to what an int64 holds
// (a legacy JSON record may hold any year).
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
		flags = 1
	}
	buf = append(buf, appTokenV1, flags)
	buf = binary.BigEndian.AppendUint64(buf, uint64(appTokenNanos(t.Exp)))
	buf = binary.BigEndian.AppendUint64(buf, uint64(appTokenNanos(t.UpdatedAt)))
	buf = binary.AppendUvarint(buf, uint64(len(t.APIBaseURL)))
	buf = append(buf, t.APIBaseURL...)
	buf = binary.AppendUvarint(buf, uint64(len(t.CloudID)))
	buf = append(buf, t.CloudID...)
	return append(buf, t.Token...)
}

// decodeAppToken reads the record stored for installation inst in either form.
func decodeAppToken(inst string, data []byte) (AppToken, error) {
	if len(data) > 0 && data[0] == '{' {
		var t AppToken
		if err := json.Unmarshal(data, &t); err != nil {
			return AppToken{}, err
		}
		// The key is what the record is for; earlier versions also wrote it
		// inside, the same by construction.
		t.InstallationID = inst
		return t, nil
	}
	if len(data) < 2+16 || data[0] != appTokenV1 || data[1]&^1 != 0 {
		return AppToken{}, errAppTokenRecord
	}
	t := AppToken{
		InstallationID: inst,
		FromUser:       data[1]&1 != 0,
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
	t.Token = string(rest)
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
