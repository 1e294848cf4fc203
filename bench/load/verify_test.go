package main

import (
	"runtime/debug"
	"testing"
	"time"
)

// The figure is the median of every round measured, before the first run and
// after each, not of the first measurement alone.
func TestBareVerifyMedianOfAllRounds(t *testing.T) {
	us := func(ds ...int) []time.Duration {
		out := make([]time.Duration, len(ds))
		for i, d := range ds {
			out[i] = time.Duration(d) * time.Microsecond
		}
		return out
	}
	var b bareVerify
	b.add(bareVerify{cpus: us(50, 52, 51), walls: us(50, 52, 51), Iterations: 300})
	if b.CPU != 51*time.Microsecond || b.Iterations != 300 {
		t.Fatalf("after one measurement: %v over %d iterations, want 51µs over 300", b.CPU, b.Iterations)
	}
	b.add(bareVerify{cpus: us(30, 31, 29), walls: us(30, 31, 29), Iterations: 300})
	b.add(bareVerify{cpus: us(32, 30, 33), walls: us(32, 30, 33), Iterations: 300})
	if b.CPU != 32*time.Microsecond || b.Wall != 32*time.Microsecond {
		t.Errorf("median of 9 rounds = %v CPU, %v wall; want 32µs", b.CPU, b.Wall)
	}
	if b.MinCPU != 29*time.Microsecond || b.MaxCPU != 52*time.Microsecond || b.Iterations != 900 || len(b.cpus) != 9 {
		t.Errorf("range %v–%v over %d iterations in %d rounds; want 29µs–52µs, 900, 9", b.MinCPU, b.MaxCPU, b.Iterations, len(b.cpus))
	}
}

// measureVerify stops the collector while it measures and puts GOGC back.
func TestMeasureVerifyRestoresGOGC(t *testing.T) {
	s, err := loadSigner(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p, err := signPool(s, 1, 1, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(123))
	if _, err := measureVerify(&s.key.PublicKey, p.FITs[0], 1, 4); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetGCPercent(123); got != 123 {
		t.Errorf("GOGC after measureVerify = %d, want 123", got)
	}
}
