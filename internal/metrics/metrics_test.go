package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterSharesTheFirstCollector(t *testing.T) {
	r := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "x_total", Help: "x"}
	first := MustRegister(r, prometheus.NewCounter(opts))
	second := MustRegister(r, prometheus.NewCounter(opts))
	if first != second {
		t.Fatal("a second registration got its own collector: its counts would be lost")
	}
	if _, err := Register(r, prometheus.NewGauge(prometheus.GaugeOpts{Name: "x_total", Help: "other"})); err == nil {
		t.Fatal("a clashing collector of another kind registered")
	}
	if c, err := Register[prometheus.Counter](nil, first); err != nil || c != first {
		t.Fatal("a nil registry must leave the collector as it is")
	}
}
