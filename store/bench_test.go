package store_test

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
)

// benchBackends are fresh stores of each kind; the value is token-sized.
var benchBackends = []struct {
	name string
	new  func(b *testing.B) store.KV
}{
	{"memory", func(b *testing.B) store.KV { return memory.New(nil) }},
	{"bolt", func(b *testing.B) store.KV { return newBolt(b, nil) }},
	{"sealed-memory", func(b *testing.B) store.KV { return newSealed(b, memory.New(nil)) }},
	{"sealed-bolt", func(b *testing.B) store.KV { return newSealed(b, newBolt(b, nil)) }},
}

var benchValue = bytes.Repeat([]byte("x"), 256)

func BenchmarkGet(b *testing.B) {
	for _, bb := range benchBackends {
		b.Run(bb.name, func(b *testing.B) {
			kv := bb.new(b)
			ctx := b.Context()
			for i := range 1000 {
				if err := kv.Put(ctx, "user/"+strconv.Itoa(i), benchValue, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := kv.Get(ctx, "user/500"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPut(b *testing.B) {
	for _, bb := range benchBackends {
		b.Run(bb.name, func(b *testing.B) {
			kv := bb.new(b)
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				if err := kv.Put(ctx, "user/500", benchValue, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
