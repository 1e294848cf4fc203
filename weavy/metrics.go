package weavy

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// register registers c with r and returns the collector to use. A collector
// already registered under the same description (a second Client or Broker on
// one registry, as in tests) is shared instead of failing.
func register[C prometheus.Collector](r prometheus.Registerer, c C) (C, error) {
	if r == nil {
		return c, nil
	}
	if err := r.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
