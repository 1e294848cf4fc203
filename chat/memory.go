package chat

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/forge-remote/forge-remote/internal/metrics"
)

// What the Service holds in memory, and what bounds it. Every map is keyed
// by a memKey and holds at most its bound; a put into a full map first drops
// an eighth of it, arbitrary entries (members: the stale entries first).
// Every entry stands for a store record or a Confluence verdict, so an evicted
// one costs a store read (or a check) when next needed, never a wrong answer
// and never a Weavy call:
//
//	map      entry                                     bound (Options)         B/entry
//	members  (inst, site, target, user) → membership    MaxEntries  50,000      74 (was 339)
//	         renewed, Confluence verdict; swept too
//	apps     (inst, site, target) → Weavy app id        MaxApps     50,000      52 (was 238)
//	inDir    (inst, user) put in the site's directory   MaxUsers    50,000      28 (was 191)
//	sites    inst → its site                            MaxSites    50,000      52
//	dirs     site whose Weavy directory exists          MaxSites    50,000      24
//
// (B/entry: BenchmarkEntryMemory, map slots included, 100,000 entries; "was":
// keyed by the id strings. At the default bounds, full, the five hold about
// 12 MB; CHAT_CACHE_ENTRIES sets the first three bounds.) An evicted membership or verdict costs a Confluence check and a
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
// every put; evicted, when not nil, counts them
// (chat_memory_evictions_total). s.mu is held.
func putBounded[V any](m map[memKey]V, bound int, k memKey, v V, evicted prometheus.Counter) {
	if _, ok := m[k]; !ok && len(m) >= bound {
		n := max(min(bound/8, len(m)), 1)
		evictLocked(m, n)
		if evicted != nil {
			evicted.Add(float64(n))
		}
	}
	m[k] = v
}

// Names of the maps in chat_memory_entries and chat_memory_evictions_total.
const (
	mapMembers   = "members"
	mapApps      = "apps"
	mapDirectory = "directory" // inDir
	mapSites     = "sites"
	mapDirs      = "dirs"
)

// evictions counts, by map, the entries a full map dropped.
type evictions struct {
	members, apps, directory, sites, dirs prometheus.Counter
}

// registerMemory exports how full each map is (chat_memory_entries) beside
// its bound (chat_memory_entries_max), and counts what a full map evicted.
func (s *Service) registerMemory(r prometheus.Registerer) {
	evicted := metrics.MustRegister(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_memory_evictions_total",
		Help: "Entries a full in-memory chat map dropped to make room, by map: members (memberships and Confluence verdicts: each costs a Confluence check and a store read when next needed), apps, directory (users put in a site's directory), sites, dirs (each a store read). Steadily rising: raise CHAT_CACHE_ENTRIES, and GOMEMLIMIT with it.",
	}, []string{"map"}))
	s.evicted = evictions{
		members: evicted.WithLabelValues(mapMembers), apps: evicted.WithLabelValues(mapApps),
		directory: evicted.WithLabelValues(mapDirectory), sites: evicted.WithLabelValues(mapSites),
		dirs: evicted.WithLabelValues(mapDirs),
	}
	for _, m := range []struct {
		name  string
		bound int
		size  func() int
	}{
		{mapMembers, s.maxEntries, func() int { return len(s.members) }},
		{mapApps, s.maxApps, func() int { return len(s.apps) }},
		{mapDirectory, s.maxUsers, func() int { return len(s.inDir) }},
		{mapSites, s.maxSites, func() int { return len(s.sites) }},
		{mapDirs, s.maxSites, func() int { return len(s.dirs) }},
	} {
		labels := prometheus.Labels{"map": m.name}
		metrics.MustRegister(r, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chat_memory_entries", ConstLabels: labels,
			Help: "Entries an in-memory chat map holds now, by map (see chat_memory_evictions_total).",
		}, func() float64 {
			s.mu.RLock()
			defer s.mu.RUnlock()
			return float64(m.size())
		}))
		metrics.MustRegister(r, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "chat_memory_entries_max", ConstLabels: labels,
			Help: "The bound of an in-memory chat map, by map: CHAT_CACHE_ENTRIES for members, apps and directory.",
		}, func() float64 { return float64(m.bound) }))
	}
}
