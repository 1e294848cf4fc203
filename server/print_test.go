package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/weavy/weavytest"
)

// A Server holds its Config in a field fmt cannot call methods through, so
// the Config's secret types would not help: the Server prints without them.
func TestServerNeverPrintsSecrets(t *testing.T) {
	srv, _ := newServer(t, forgetest.NewKey(t, "k1"))
	printed := fmt.Sprintf("%v %+v %#v %s %q %x", srv, srv, srv, srv, srv, srv)
	if strings.Contains(printed, weavytest.APIKey) {
		t.Fatalf("printing the server shows the Weavy API key: %s", printed)
	}
}
