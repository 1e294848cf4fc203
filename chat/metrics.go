package chat

import (
	"github.com/forge-remote/forge-remote/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

func newMetrics(r prometheus.Registerer) (opens, removed, checks *prometheus.CounterVec) {
	opens = metrics.MustRegister(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_opens_total",
		Help: "Chat opens by result: warm (memory only), rechecked (a Confluence check, the membership warm in memory), renewed (store, no Weavy call), joined (membership added), cold (app provisioned), denied (Confluence says the user cannot view the target), refused, error.",
	}, []string{"result"}))
	removed = metrics.MustRegister(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_memberships_removed_total",
		Help: "Weavy app memberships removed, by reason: lease_expired, squatter (no lease at first provisioning), uninstall, lockdown (weavy lockdown --apply), access_denied (Confluence says the user can no longer view the target).",
	}, []string{"reason"}))
	checks = metrics.MustRegister(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_access_checks_total",
		Help: "Checks with Confluence, as the user, that they can view a chat's page or space, by result: allowed, denied, error (no verdict: nobody joins).",
	}, []string{"result"}))
	return opens, removed, checks
}
