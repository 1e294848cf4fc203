package main

import (
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
)

func TestKindOf(t *testing.T) {
	for key, want := range map[string]string{
		"chat/lease/inst/app/user": "chat/lease",
		"chat/app/x":               "chat/app",
		"weavy/u/abc":              "weavy/u",
		"schema/version":           "schema/version",
		"budget":                   "budget",
		"a//b":                     "a/",
	} {
		if got := kindOf(key); got != want {
			t.Errorf("kindOf(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestParseGC(t *testing.T) {
	text := `# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.1e-05
go_gc_duration_seconds_sum 0.5
go_gc_duration_seconds_count 1234
# TYPE go_gc_heap_live_bytes gauge
go_gc_heap_live_bytes 4.194304e+07
go_gc_gomemlimit_bytes 4.194304e+07
go_goroutines 12
`
	g, ok := parseGC(strings.NewReader(text))
	if !ok || g.Cycles != 1234 || g.LiveHeapMiB != 40 || g.LimitMiB != 40 {
		t.Fatalf("parseGC = %+v, %v", g, ok)
	}
	if _, ok := parseGC(strings.NewReader("go_goroutines 3\n")); ok {
		t.Error("a /metrics without go_gc_duration_seconds_count read as GC figures")
	}
}

// TestReadStore: the figures count every record by kind, keys and values
// as stored, largest kind first, from a file written the way store/bolt
// writes it.
func TestReadStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := map[string]int{ // key → value length
		"chat/lease/i1/a1/u1": 1000, "chat/lease/i1/a2/u1": 1200, "chat/lease/i2/a1/u9": 1100,
		"weavy/u/x": 500, "schema/version": 1,
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket(boltBucket)
		if err != nil {
			return err
		}
		for k, n := range put {
			if err := b.Put([]byte(k), make([]byte, n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	st, err := readStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 5 || len(st.Kinds) != 3 {
		t.Fatalf("%d records in %d kinds, want 5 in 3: %+v", st.Records, len(st.Kinds), st.Kinds)
	}
	lease := st.Kinds[0]
	if lease.Kind != "chat/lease" || lease.Count != 3 || lease.KeyBytes != 19 || lease.ValueBytes != 1100 {
		t.Errorf("largest kind %+v, want chat/lease: 3 records, 19 B keys, 1100 B values", lease)
	}
	if got, want := lease.Bytes(), 3.0*(19+1100+boltElementHeader); got != want {
		t.Errorf("chat/lease takes %v B, want %v", got, want)
	}
	if st.Kinds[1].Kind != "weavy/u" || st.Kinds[2].Kind != "schema/version" {
		t.Errorf("kinds not largest first: %+v", st.Kinds)
	}
	if st.FileMiB <= 0 || st.UsedMiB <= 0 || st.LeafFill <= 0 || st.LeafFill > 1 {
		t.Errorf("file %.3f MiB, used %.3f MiB, leaf fill %.2f", st.FileMiB, st.UsedMiB, st.LeafFill)
	}
}

// TestReadStoreHeld: a file another process holds for writing is an error
// after bolt's one-second wait, not a hang.
func TestReadStoreHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := readStore(path); err == nil {
		t.Fatal("readStore opened a file held open for writing")
	}
}

// TestReadStoreNoFile: a server that ignored STORE_URL (the Node peer, the
// HTTP floor) wrote no file, and has no figures rather than an error.
func TestReadStoreNoFile(t *testing.T) {
	st, err := readStore(filepath.Join(t.TempDir(), "bench.db"))
	if st != nil || err != nil {
		t.Fatalf("readStore of no file = %+v, %v; want nil, nil", st, err)
	}
}

func TestChatBudgetEnv(t *testing.T) {
	t.Setenv("CONFLUENCE_POOL", "")
	t.Setenv("CONFLUENCE_POINTS_PER_HOUR", "")
	if got := chatBudgetEnv(); len(got) != 1 || got[0] != "CONFLUENCE_POOL=site" {
		t.Errorf("no budget in the environment: %q, want a pool per site", got)
	}
	if chatBudgetIf(0) != "" || !strings.HasPrefix(chatBudgetIf(5), "CONFLUENCE_POOL=site") {
		t.Errorf("chatBudgetIf: %q, %q", chatBudgetIf(0), chatBudgetIf(5))
	}
	t.Setenv("CONFLUENCE_POINTS_PER_HOUR", "500000")
	if got := chatBudgetEnv(); got != nil {
		t.Errorf("the environment's budget is overridden with %q", got)
	}
	if got := chatBudget(); got != "CONFLUENCE_POINTS_PER_HOUR=500000 (from the environment)" {
		t.Errorf("chatBudget() = %q", got)
	}
}
