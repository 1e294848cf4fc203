package confluencescale

import (
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/storetest"
)

// The scale run's KV keeps the store contract every backend keeps.
func TestKVContract(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	storetest.Run(t, func(t *testing.T) store.KV { return NewKV(clock.Now) }, clock.Advance)
}
