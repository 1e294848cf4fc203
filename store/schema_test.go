package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
)

func TestCheckSchema(t *testing.T) {
	ctx := t.Context()
	kv := memory.New(nil)
	defer kv.Close()

	if written, err := store.CheckSchema(ctx, kv); err != nil || !written {
		t.Fatalf("CheckSchema of a new store = %v, %v; want it written", written, err)
	}
	if v, err := kv.Get(ctx, store.SchemaKey); err != nil || string(v) != "1" {
		t.Fatalf("%s = %q, %v; want 1", store.SchemaKey, v, err)
	}
	if written, err := store.CheckSchema(ctx, kv); err != nil || written {
		t.Fatalf("CheckSchema of a store at this version = %v, %v; want it accepted as it is", written, err)
	}

	for _, found := range []string{"2", "", "01", strings.Repeat("9", 40)} {
		put(t, kv, store.SchemaKey, []byte(found))
		_, err := store.CheckSchema(ctx, kv)
		var se *store.SchemaError
		if !errors.As(err, &se) {
			t.Fatalf("CheckSchema with version %q = %v; want a SchemaError", found, err)
		}
		msg := err.Error()
		shown := found[:min(len(found), 32)]
		if !strings.Contains(msg, `"schema/version"`) || !strings.Contains(msg, `version "`+shown+`"`) || !strings.Contains(msg, "knows version 1") {
			t.Errorf("error %q; want it to name the key, the version found and the one known", msg)
		}
		if v, _ := kv.Get(ctx, store.SchemaKey); string(v) != found {
			t.Errorf("CheckSchema overwrote %q with %q", found, v)
		}
	}

	kv.Close()
	if _, err := store.CheckSchema(ctx, kv); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("CheckSchema of a closed store = %v; want ErrUnavailable", err)
	}
}
