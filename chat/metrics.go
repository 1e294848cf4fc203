package chat

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

func newMetrics(r prometheus.Registerer) (opens, removed *prometheus.CounterVec) {
	opens = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_opens_total",
		Help: "Chat opens by result: warm (memory only), renewed (store, no Weavy call), joined (membership added), cold (app provisioned), refused, error.",
	}, []string{"result"}))
	removed = register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_memberships_removed_total",
		Help: "Weavy app memberships removed, by reason: lease_expired, squatter (no lease at first provisioning), uninstall.",
	}, []string{"reason"}))
	return opens, removed
}

// register shares a collector already registered (several Services on one
// registry, as in tests).
func register[C prometheus.Collector](r prometheus.Registerer, c C) C {
	if r == nil {
		return c
	}
	if err := r.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("chat: registering metrics: %v", err))
	}
	return c
}
