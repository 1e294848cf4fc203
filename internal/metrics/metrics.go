// Package metrics registers Prometheus collectors the one way every package
// here does: a collector already registered under the same description (a
// second client, broker or service on one registry, as in tests) is shared.
package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with r (nil: none) and returns the collector to use.
func Register[C prometheus.Collector](r prometheus.Registerer, c C) (C, error) {
	if r == nil {
		return c, nil
	}
	if err := r.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("registering metrics: %w", err)
	}
	return c, nil
}

// MustRegister is Register for collectors whose clash is a programming error.
func MustRegister[C prometheus.Collector](r prometheus.Registerer, c C) C {
	c, err := Register(r, c)
	if err != nil {
		panic(err)
	}
	return c
}
