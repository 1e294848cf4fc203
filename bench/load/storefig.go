package main

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// What forge-remote's bolt file held after a run: the records by kind, so
// that the file's share of the peak RSS can be read record by record. bolt
// serves every read from a memory map of the file, so each page a run reads
// counts in the server's RSS (as a mapped file: RssFile, or RssShmem on a
// tmpfs) until the kernel needs the memory back.

// storeFigures is read from the bolt file after the server has stopped.
type storeFigures struct {
	FileMiB   float64       `json:"file_mib"`     // the file's size on disk
	UsedMiB   float64       `json:"used_mib"`     // its pages in use (bolt's high-water mark)
	Records   int           `json:"records"`      // live and expired alike
	LeafBytes int64         `json:"leaf_bytes"`   // bytes of the leaf pages in use
	LeafFill  float64       `json:"leaf_fill"`    // of the leaf pages' bytes, the share in use
	Kinds     []recordsKind `json:"record_kinds"` // largest first
}

// recordsKind is one kind of record: the key up to its second '/' (a
// package's prefix and the record's name in it, e.g. chat/lease).
type recordsKind struct {
	Kind       string  `json:"kind"`
	Count      int     `json:"count"`
	KeyBytes   float64 `json:"key_bytes"`   // mean
	ValueBytes float64 `json:"value_bytes"` // mean, as stored: expiry header and seal included
}

// boltElementHeader is what bolt spends on each record in a leaf page
// besides its key and value (leafPageElement: flags, pos, ksize, vsize).
const boltElementHeader = 16

// Bytes is what the kind's records take in leaf pages: keys, values and
// bolt's element headers.
func (k recordsKind) Bytes() float64 {
	return float64(k.Count) * (k.KeyBytes + k.ValueBytes + boltElementHeader)
}

// boltBucket is store/bolt's one bucket.
var boltBucket = []byte("kv")

// readStore reads the figures of the bolt file at path, which no process may
// hold open for writing (bolt's file lock; one second's wait). No file at
// path is no figures: the server ignored STORE_URL (the Node peer and the
// HTTP floor do).
func readStore(path string) (*storeFigures, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store figures: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("store figures: %w", err)
	}
	defer db.Close()
	f := &storeFigures{FileMiB: float64(fi.Size()) / (1 << 20)}
	kinds := kindSums{}
	err = db.View(func(tx *bbolt.Tx) error {
		f.UsedMiB = float64(tx.Size()) / (1 << 20)
		b := tx.Bucket(boltBucket)
		if b == nil {
			return fmt.Errorf("no bucket %q", boltBucket)
		}
		st := b.Stats()
		f.LeafBytes = int64(st.LeafInuse)
		if st.LeafAlloc > 0 {
			f.LeafFill = float64(st.LeafInuse) / float64(st.LeafAlloc)
		}
		return b.ForEach(func(k, v []byte) error {
			kinds.add(kindOf(string(k)), len(k), len(v))
			f.Records++
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store figures: %w", err)
	}
	f.Kinds = kinds.largestFirst(recordsKind.Bytes)
	return f, nil
}

// kindSums adds up records by kind: how many, and their key and value bytes.
type kindSums map[string]*struct{ n, k, v int }

func (s kindSums) add(kind string, keyBytes, valueBytes int) {
	sum := s[kind]
	if sum == nil {
		sum = &struct{ n, k, v int }{}
		s[kind] = sum
	}
	sum.n++
	sum.k += keyBytes
	sum.v += valueBytes
}

// largestFirst is the kinds with their means, ordered by what size says
// each takes, then by name.
func (s kindSums) largestFirst(size func(recordsKind) float64) []recordsKind {
	var out []recordsKind
	for name, sum := range s {
		out = append(out, recordsKind{Kind: name, Count: sum.n,
			KeyBytes: float64(sum.k) / float64(sum.n), ValueBytes: float64(sum.v) / float64(sum.n)})
	}
	slices.SortFunc(out, func(a, b recordsKind) int {
		return cmp.Or(cmp.Compare(size(b), size(a)), strings.Compare(a.Kind, b.Kind))
	})
	return out
}

// kindOf is a key up to its second '/', or whole when it has fewer.
func kindOf(key string) string {
	first := strings.IndexByte(key, '/')
	if first < 0 {
		return key
	}
	if second := strings.IndexByte(key[first+1:], '/'); second >= 0 {
		return key[:first+1+second]
	}
	return key
}

// gcFigures are the Go runtime's figures a server's /metrics shows.
type gcFigures struct {
	Cycles      float64 // go_gc_duration_seconds_count: collections so far
	LiveHeapMiB float64 // go_gc_heap_live_bytes: the heap the last collection kept
	LimitMiB    float64 // go_gc_gomemlimit_bytes
}

// scrapeGC reads gcFigures from the server's /metrics; ok is false when it
// has none (the peer, the floor) or did not answer.
func scrapeGC(addr string) (gcFigures, bool) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return gcFigures{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return gcFigures{}, false
	}
	return parseGC(resp.Body)
}

// parseGC reads the three series from Prometheus's text format; ok is
// false unless the collection count is there.
func parseGC(r io.Reader) (gcFigures, bool) {
	var g gcFigures
	var found bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_gc_duration_seconds_count":
			g.Cycles, found = v, true
		case "go_gc_heap_live_bytes":
			g.LiveHeapMiB = v / (1 << 20)
		case "go_gc_gomemlimit_bytes":
			g.LimitMiB = v / (1 << 20)
		}
	}
	return g, found
}

// kindBytes is what every record takes in leaf pages.
func (f *storeFigures) kindBytes() float64 {
	var sum float64
	for _, k := range f.Kinds {
		sum += k.Bytes()
	}
	return sum
}

// lines says what the figures mean, in words.
func (f *storeFigures) lines() []string {
	return []string{
		fmt.Sprintf("bolt file %.1f MiB, %.1f MiB of it in use; %d records taking %.1f MB (keys, values with their expiry header and seal, and bolt's %d B a record) in leaf pages %.0f %% full.",
			f.FileMiB, f.UsedMiB, f.Records, f.kindBytes()/1e6, boltElementHeader, 100*f.LeafFill),
		"bolt serves every read from a memory map of its file: each page a run has read counts in the server's RSS as a mapped file",
		"(the \"file\" part of \"RSS after the run\"; RssShmem when the file is on a tmpfs) until the kernel wants the memory back.",
	}
}
