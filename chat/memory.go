package chat

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"strings"
)

// What the Service holds in memory, and what bounds it. Every map is keyed
// by a memKey and holds at most its bound; a put into a full map first drops
// an eighth of it, arbitrary entries (members: the stale entries first).
// Every entry stands for a store record or a Confluence verdict, so an evicted
// one costs a store read (or a check) when next needed, never a wrong answer
// and never a Weavy call:
//
//	map      entry                                     bound (Options)         B/entry
//	members  (inst, site, target, user) → membership    MaxEntries 200,000      74 (was 339)
//	         renewed, Confluence verdict; swept too
//	apps     (inst, site, target) → Weavy app id        MaxApps    200,000      52 (was 238)
//	inDir    (inst, user) put in the site's directory   MaxUsers   200,000      28 (was 191)
//	sites    inst → its site                            MaxSites    50,000      52
//	dirs     site whose Weavy directory exists          MaxSites    50,000      24
//
// (B/entry: BenchmarkEntryMemory, map slots included, 100,000 entries; "was":
// keyed by the id strings. At the default bounds, full, the five hold about
// 35 MB.) An evicted membership or verdict costs a Confluence check and a
// lease read; an evicted app, directory assignment, site or directory costs
// store reads (TestEvictionCostsOnlyStoreReads).

// memKey is what memory keys an entry by: 128 bits of a SHA-256, salted per
// Service, of the fields naming it. Holding no strings makes an entry a few
// dozen bytes instead of a few hundred; the chance of two entries sharing a
// key is about n²/2¹²⁹, nil for any n a process holds, and without the salt
// no one can look for two that do.
type memKey [16]byte

// Domains keep the maps' keys apart (each map has its own anyway).
const (
	domMember byte = iota + 1
	domApp
	domUser
	domSite
	domSiteCloud
	domDir
)

// installationARI starts every Forge installation id; left out of the hash
// (a flag says so), the usual keys fit in fewer SHA-256 blocks.
const installationARI = "ari:cloud:ecosystem::installation/"

// keyer makes memKeys and installation tags.
type keyer struct {
	salt [16]byte
	seed maphash.Seed
}

func newKeyer() keyer {
	k := keyer{seed: maphash.MakeSeed()}
	_, _ = rand.Read(k.salt[:]) // never fails (crypto/rand)
	return k
}

// start begins a key's input: the salt, the domain, then the installation
// (without its constant ARI start).
func (h *keyer) start(p []byte, domain byte, inst string) []byte {
	p = append(p, h.salt[:]...)
	rest, ari := strings.CutPrefix(inst, installationARI)
	flag := byte(0)
	if ari {
		flag = 1
	}
	p = append(p, domain, flag)
	return field(p, rest)
}

// field appends s, its length first, so that no two field lists read the
// same. (Writing each UUID as its 16 bytes saves a SHA-256 block of the
// three a warm open's key takes, but was measured no faster: the encoding
// costs about what the block does.)
func field(p []byte, s string) []byte {
	p = binary.AppendUvarint(p, uint64(len(s)))
	return append(p, s...)
}

func sum(p []byte) memKey {
	s := sha256.Sum256(p)
	return memKey(s[:len(memKey{})])
}

// member keys members: one (installation, site, target, user).
func (h *keyer) member(inst, cloudID string, t Target, user string) memKey {
	var buf [192]byte // enough for the usual ids; longer ones cost an allocation
	p := h.start(buf[:0], domMember, inst)
	p = field(p, cloudID)
	p = append(p, byte(t.Kind))
	p = field(p, t.ID)
	return sum(field(p, user))
}

// app keys apps: one (installation, site, target). The site is part of it:
// an installation is pinned to one site (checkSite), and a warm open must
// never answer one site's app for a FIT naming another.
func (h *keyer) app(inst, cloudID string, t Target) memKey {
	var buf [160]byte
	p := h.start(buf[:0], domApp, inst)
	p = field(p, cloudID)
	p = append(p, byte(t.Kind))
	return sum(field(p, t.ID))
}

// user keys inDir: one (installation, user).
func (h *keyer) user(inst, user string) memKey {
	var buf [160]byte
	return sum(field(h.start(buf[:0], domUser, inst), user))
}

// site keys sites: one installation.
func (h *keyer) site(inst string) memKey {
	var buf [128]byte
	return sum(h.start(buf[:0], domSite, inst))
}

// siteCloud is what sites holds of an installation's site.
func (h *keyer) siteCloud(cloudID string) memKey {
	var buf [128]byte
	return sum(h.start(buf[:0], domSiteCloud, cloudID))
}

// dir keys dirs: one site.
func (h *keyer) dir(cloudID string) memKey {
	var buf [128]byte
	return sum(h.start(buf[:0], domDir, cloudID))
}

// tag is the installation's tag in its entries: 32 bits of a hash, enough for
// ForgetInstallation to find them (and, rarely, a few of another
// installation's, which the next opens read back from the store).
func (h *keyer) tag(inst string) uint32 {
	return uint32(maphash.String(h.seed, inst))
}

// appEntry is a provisioned app held in memory.
type appEntry struct {
	id   int64
	inst uint32 // tag
}

// evictLocked drops n arbitrary entries of m (map order). s.mu is held.
func evictLocked[V any](m map[memKey]V, n int) {
	for k := range m {
		if n <= 0 {
			return
		}
		delete(m, k)
		n--
	}
}

// putBounded stores v under k in m, first dropping an eighth of m's entries
// when it already holds bound others, so that a full map does not evict on
// every put. s.mu is held.
func putBounded[V any](m map[memKey]V, bound int, k memKey, v V) {
	if _, ok := m[k]; !ok && len(m) >= bound {
		evictLocked(m, max(bound/8, 1))
	}
	m[k] = v
}
