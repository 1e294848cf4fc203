package jsonread

import (
	"hash/maphash"
	"sync/atomic"
)

// Interner shares the strings that many decoded documents repeat (a FIT's
// issuer, audience, app and site claims arrive thousands of times a second
// with the same bytes), so decoding them allocates nothing. It is a fixed
// table of 1,024 slots, each string with two candidate slots chosen by hash:
// bounded memory, no lock, and a value that stops repeating is simply
// overwritten. Only strings up to 128 bytes are kept. Safe for
// concurrent use. Whoever feeds it can only churn it: memory stays bounded
// and every answer is compared by value, so the worst is lost sharing. Feed
// it input few can produce (a FIT's claims once Forge's signature holds).
type Interner struct {
	seed  maphash.Seed
	slots [internSlots]atomic.Pointer[string]
}

const (
	internSlots  = 1024
	internMaxLen = 128
)

// NewInterner returns an empty Interner.
func NewInterner() *Interner {
	return &Interner{seed: maphash.MakeSeed()}
}

// string returns b as a string, shared with earlier calls when they had the
// same bytes. A nil Interner just copies.
func (in *Interner) string(b []byte) string {
	if in == nil || len(b) > internMaxLen {
		return string(b)
	}
	// Two candidate slots per string, so that two busy strings whose first
	// slots collide do not evict each other on every call.
	h := maphash.Bytes(in.seed, b)
	first := &in.slots[h&(internSlots-1)]
	if p := first.Load(); p != nil && *p == string(b) {
		return *p
	}
	second := &in.slots[(h>>32)&(internSlots-1)]
	if p := second.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	if first.Load() == nil {
		first.Store(&s)
	} else {
		second.Store(&s)
	}
	return s
}
