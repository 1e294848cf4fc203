//go:build !linux

package main

import "time"

// threadCPU is not available here: measureVerify then reports wall time as
// CPU time. The figures from /proc need Linux anyway.
func threadCPU() time.Duration { return 0 }
