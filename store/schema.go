package store

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

const (
	// SchemaKey holds the version of the store's layout: the keys and record
	// forms this server writes and reads. It is written at first start and
	// is the one record kept in plain text, beneath the sealing, so that any
	// server can read it whatever its STORE_KEY (store/open checks it).
	SchemaKey = "schema/version"
	// SchemaVersion is the layout this server knows, in decimal under
	// SchemaKey. A change to the layout that an older server would misread
	// raises it.
	SchemaVersion = 1
)

// SchemaError is a store written by a server with another layout.
type SchemaError struct {
	Found string // what SchemaKey holds, cut at 32 bytes
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("store: key %q holds schema version %q, but this forge-remote knows version %d only; it will not use a store whose layout it does not know (was it written by a newer version?)",
		SchemaKey, e.Found, SchemaVersion)
}

// CheckSchema writes SchemaVersion under SchemaKey into a store that has
// none, accepts a store holding that version, and refuses any other with a
// *SchemaError naming the key and both versions. kv is the backend itself,
// not a Sealed. written says whether it wrote the version.
func CheckSchema(ctx context.Context, kv KV) (written bool, err error) {
	want := strconv.Itoa(SchemaVersion)
	var found []byte
	err = kv.Update(ctx, SchemaKey, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		found, written = nil, false // Update may call this more than once
		if exists {
			found = old[:min(len(old), 32)]
			return nil, 0, Keep
		}
		written = true
		return []byte(want), 0, nil
	})
	if err != nil {
		return false, fmt.Errorf("store: schema version (key %q): %w", SchemaKey, err)
	}
	if !written && string(found) != want {
		return false, &SchemaError{Found: string(found)}
	}
	return written, nil
}
