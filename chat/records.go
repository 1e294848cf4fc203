package chat

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/url"
	"slices"
	"time"
)

// Store keys. Ids are path-escaped (no '/'), so one installation's or app's
// prefix never matches another's; users appear as a hash of their uid. No
// key or value holds a token.
//
// A site's installations are listed twice: chat/sitelist/<cloudID>, one
// record, sorted, so that listing them is one Get (a prefix Scan of
// chat/onsite/<cloudID>/ walks the whole keyspace on Redis), and a
// chat/onsite/ record each, still written for the previous version's
// replicas during a rolling upgrade and what the list is first made from on
// a store they wrote (installationsOn, provision.go). No other prefix starts
// with chat/sitelist/, nor it with another.
const (
	appPrefix      = "chat/app/"      // + inst / appUID → appRecord
	leasePrefix    = "chat/lease/"    // + inst / appUID / userHash → lease
	dirPrefix      = "chat/dir/"      // + cloudID: the site's directory exists in Weavy
	sitePrefix     = "chat/site/"     // + inst → cloudID, for the uninstall
	onSitePrefix   = "chat/onsite/"   // + cloudID / inst: the installations on a site (Forge environments)
	siteListPrefix = "chat/sitelist/" // + cloudID → JSON array of the site's installations (above)
	inDirPrefix    = "chat/indir/"    // + inst / userHash → uid: put in the site's directory
	userDirsPrefix = "chat/userdirs/" // + userHash → JSON list of the user's directories (all sites)
)

func esc(s string) string { return url.PathEscape(s) }

func appsOf(inst string) string              { return appPrefix + esc(inst) + "/" }
func appKey(inst, appUID string) string      { return appsOf(inst) + esc(appUID) }
func leasesOf(inst string) string            { return leasePrefix + esc(inst) + "/" }
func leasesOfApp(inst, appUID string) string { return leasesOf(inst) + esc(appUID) + "/" }
func leaseKey(inst, appUID, user string) string {
	return leasesOfApp(inst, appUID) + userHash(user)
}
func dirKey(cloudID string) string   { return dirPrefix + esc(cloudID) }
func siteKey(inst string) string     { return sitePrefix + esc(inst) }
func onSiteOf(cloudID string) string { return onSitePrefix + esc(cloudID) + "/" }
func onSiteKey(cloudID, inst string) string {
	return onSiteOf(cloudID) + esc(inst)
}
func siteListKey(cloudID string) string { return siteListPrefix + esc(cloudID) }
func inDirsOf(inst string) string       { return inDirPrefix + esc(inst) + "/" }
func inDirKey(inst, user string) string { return inDirsOf(inst) + userHash(user) }
func userDirsKey(user string) string    { return userDirsPrefix + userHash(user) }

// userHash is a user's uid in a key: 128 bits of a SHA-256, base64url.
func userHash(uid string) string {
	sum := sha256.Sum256([]byte("forge-remote/chat/user\x00" + uid))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// encodeSiteList is a site's list of installations as stored: a JSON array,
// sorted, each id once.
func encodeSiteList(insts []string) []byte {
	b, _ := json.Marshal(normalSiteList(insts))
	return b
}

// decodeSiteList reads a stored site list; ok is false when b is none.
func decodeSiteList(b []byte) (insts []string, ok bool) {
	if b == nil || json.Unmarshal(b, &insts) != nil {
		return nil, false
	}
	return normalSiteList(insts), true
}

// normalSiteList sorts insts and drops repeated and empty ids, in place.
func normalSiteList(insts []string) []string {
	slices.Sort(insts)
	insts = slices.Compact(insts)
	if len(insts) > 0 && insts[0] == "" {
		insts = insts[1:]
	}
	if insts == nil {
		insts = []string{}
	}
	return insts
}

// appRecord is a provisioned app: its Weavy id and uid.
type appRecord struct {
	ID  int64  `json:"id"`
	UID string `json:"uid"`
}

func (r appRecord) encode() []byte { b, _ := json.Marshal(r); return b }

func decodeApp(b []byte) (appRecord, bool) {
	var r appRecord
	return r, json.Unmarshal(b, &r) == nil && r.ID > 0
}

// leaseState is where a membership is in its life.
type leaseState byte

const (
	// statePending: written before the member is added in Weavy, so that a
	// first provisioning racing with it (another replica) keeps the member.
	statePending leaseState = 1
	// stateActive: Weavy has the member.
	stateActive leaseState = 2
	// stateRevoking: the lease expired and the prune is removing the member.
	stateRevoking leaseState = 3
)

// lease is a user's right to an app's membership, renewed by each open.
//
//	state | renewed (8 bytes, big-endian unix ns) | appID (8 bytes) | len(appUID) (1 byte) | appUID | user
type lease struct {
	State   leaseState
	Renewed time.Time
	AppID   int64
	AppUID  string
	User    string
}

func (l lease) encode() []byte {
	b := make([]byte, 0, 18+len(l.AppUID)+len(l.User))
	b = append(b, byte(l.State))
	b = binary.BigEndian.AppendUint64(b, uint64(l.Renewed.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(l.AppID))
	b = append(b, byte(len(l.AppUID)))
	b = append(b, l.AppUID...)
	return append(b, l.User...)
}

func decodeLease(b []byte) (lease, bool) {
	if len(b) < 18 || b[0] < byte(statePending) || b[0] > byte(stateRevoking) {
		return lease{}, false
	}
	n := int(b[17])
	if len(b) < 18+n+1 {
		return lease{}, false
	}
	l := lease{
		State:   leaseState(b[0]),
		Renewed: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:]))),
		AppID:   int64(binary.BigEndian.Uint64(b[9:])),
		AppUID:  string(b[18 : 18+n]),
		User:    string(b[18+n:]),
	}
	return l, l.AppID > 0
}

// expired reports whether l gives no right at now.
func (l lease) expired(now time.Time, length time.Duration) bool {
	return l.State == stateRevoking || !now.Before(l.Renewed.Add(length))
}
