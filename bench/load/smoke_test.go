//go:build slow

package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestSmoke builds forge-remote and runs the load tool's smoke against it, so
// the tool cannot rot. No timing is asserted: only that the server starts, it
// opens the smoke's page chats, the warm path answers 2xx with a token, and
// Weavy is not called on it.
func TestSmoke(t *testing.T) {
	ours := smoke(t)
	// What the store held: a lease and an app record for each chat, read
	// from the bolt file once the server stopped; the GC figures from its
	// /metrics.
	if ours.LiveHeapMiB <= 0 || ours.GCLimitMiB <= 0 {
		t.Errorf("no GC figures from /metrics: live heap %.1f MiB, limit %.1f MiB", ours.LiveHeapMiB, ours.GCLimitMiB)
	}
	if ours.Store == nil {
		t.Fatal("no store figures")
	}
	if ours.Redis != nil {
		t.Errorf("Redis figures from a bolt run: %+v", ours.Redis)
	}
	checkChatRecords(t, "store", ours.Store.Kinds)
}

// TestSmokeRedis is the smoke with -store redis: forge-remote keeps its
// records in the tool's own redis-server, and the report says what Redis
// held once the server stopped.
func TestSmokeRedis(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("no redis-server on PATH for -store redis")
	}
	ours := smoke(t, "-store", "redis")
	if ours.Redis == nil {
		t.Fatal("no Redis figures")
	}
	if ours.Store != nil {
		t.Errorf("bolt figures from a Redis run: %+v", ours.Store)
	}
	if rd := ours.Redis; rd.Keys < rd.records() || rd.UsedMiB <= 0 || rd.PeakRSSMiB <= 0 {
		t.Errorf("Redis figures: %d keys (%d by kind), used %.1f MiB, peak RSS %.1f MiB", rd.Keys, rd.records(), rd.UsedMiB, rd.PeakRSSMiB)
	}
	checkChatRecords(t, "Redis", ours.Redis.Kinds)
}

// smoke runs the smoke with args added and returns forge-remote's run.
func smoke(t *testing.T, args ...string) runResult {
	t.Helper()
	if testing.Short() {
		t.Skip("the load smoke builds and starts the server: skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build the server with")
	}
	// No deadline of its own: a cold build of the image's flags took 184 s
	// on a busy 2-core machine. go test's -timeout bounds the whole, and the
	// tool's own limits are lifted so that a slow machine is never the cause.
	var out, errOut bytes.Buffer
	err := run(t.Context(), append([]string{"-smoke", "-json", "-duration", "1s", "-cache", t.TempDir(),
		"-ready-timeout", "1h", "-timeout", "1h"}, args...), &out, &errOut)
	if err != nil {
		t.Fatalf("smoke: %v\nstderr:\n%s\nstdout:\n%s", err, &errOut, &out)
	}
	// The smoke opens 100 page chats first, each checked with Confluence.
	for _, want := range []string{`"name": "forge-remote"`, `"weavy_calls": 0`, `"non_2xx": 0`, `"chat_opens": 100,`, `"chat_confluence_checks": 100,`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %s:\n%s", want, &out)
		}
	}
	var r report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("report: %v\n%s", err, &out)
	}
	return r.run("forge-remote")
}

// checkChatRecords: the store held a lease and an app record for each of
// the smoke's 100 chats.
func checkChatRecords(t *testing.T, where string, kinds []recordsKind) {
	t.Helper()
	counts := map[string]int{}
	for _, k := range kinds {
		counts[k.Kind] = k.Count
	}
	if counts["chat/lease"] != 100 || counts["chat/app"] != 100 {
		t.Errorf("%s held %d leases and %d app records for 100 chats: %+v", where, counts["chat/lease"], counts["chat/app"], kinds)
	}
}
