package forge

import (
	"fmt"
	"strings"

	"github.com/forge-remote/forge-remote/internal/ids"
)

// appARIPrefix starts every Forge app ARI; the FIT audience is such an ARI.
const appARIPrefix = "ari:cloud:ecosystem::app/"

// NormalizeAppID turns a configured app id, either the ARI
// "ari:cloud:ecosystem::app/<uuid>" or the bare uuid, into the ARI that Forge
// puts in a FIT's `aud`. The uuid is lower-cased, as Forge writes it.
func NormalizeAppID(s string) (string, error) {
	id := strings.TrimSpace(s)
	// The ARI prefix is matched case-insensitively: it is easy to mistype and
	// cannot be confused with anything else.
	if len(id) >= len(appARIPrefix) && strings.EqualFold(id[:len(appARIPrefix)], appARIPrefix) {
		id = id[len(appARIPrefix):]
	}
	if !ids.IsUUID(id) {
		return "", fmt.Errorf("forge: app id %q is neither %s<uuid> nor a bare uuid", s, appARIPrefix)
	}
	return appARIPrefix + strings.ToLower(id), nil
}
