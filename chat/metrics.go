package chat

import (
	"github.com/forge-remote/forge-remote/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

func newMetrics(r prometheus.Registerer) (opens, removed *prometheus.CounterVec) {
	opens = metrics.MustRegister(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_opens_total",
		Help: "Chat opens by result: warm (memory only), renewed (store, no Weavy call), joined (membership added), cold (app provisioned), refused, error.",
	}, []string{"result"}))
	removed = metrics.MustRegister(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_memberships_removed_total",
		Help: "Weavy app memberships removed, by reason: lease_expired, squatter (no lease at first provisioning), uninstall, lockdown (weavy lockdown --apply).",
	}, []string{"reason"}))
	return opens, removed
}
