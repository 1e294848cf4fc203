package forge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/forge-remote/forge-remote/internal/metrics"
)

// verifierMetrics are the Verifier's Prometheus metrics; a nil one records
// nothing.
type verifierMetrics struct {
	rejections *prometheus.CounterVec
	fetches    *prometheus.CounterVec
	keys       prometheus.Gauge
}

func newVerifierMetrics(r prometheus.Registerer) (*verifierMetrics, error) {
	m := &verifierMetrics{
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "forge_fit_rejections_total",
			Help: "Forge invocation tokens rejected, by reason.",
		}, []string{"reason"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "forge_jwks_fetches_total",
			Help: "Fetches of Forge's signing key set, by result (ok, error).",
		}, []string{"result"}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "forge_jwks_keys",
			Help: "Signing keys in the key set held.",
		}),
	}
	var err error
	if m.rejections, err = metrics.Register(r, m.rejections); err != nil {
		return nil, err
	}
	if m.fetches, err = metrics.Register(r, m.fetches); err != nil {
		return nil, err
	}
	if m.keys, err = metrics.Register(r, m.keys); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *verifierMetrics) rejected(reason string) {
	if m != nil {
		m.rejections.WithLabelValues(reason).Inc()
	}
}

func (m *verifierMetrics) fetched(result string, keys int) {
	if m == nil {
		return
	}
	m.fetches.WithLabelValues(result).Inc()
	if result == "ok" {
		m.keys.Set(float64(keys))
	}
}
