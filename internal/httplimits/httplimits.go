// Package httplimits holds the limits forge-remote's http.Server runs with, so
// that bench/floor measures the HTTP stack under the same ones.
package httplimits

import "time"

// Forge gives a remote 25 s; large `context` claims make big headers
// (FORGE.md asks for at least 32 KiB).
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 35 * time.Second
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 64 << 10
)
