package main

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// bareVerify is the cost floor of one request: SHA-256 of a real FIT's signing
// input and rsa.VerifyPKCS1v15 with the same 2048-bit key, single-threaded,
// in CPU time of the measuring thread (wall time is shown beside it).
//
// The machine's speed drifts by a fifth and more within minutes on a shared
// VM, so the tool measures it again after every server's run: the figure is
// the median of every round, taken around all the runs it is divided into.
type bareVerify struct {
	CPU        time.Duration // median over rounds, per verify
	Wall       time.Duration // median over rounds, per verify
	MinCPU     time.Duration // the fastest round's CPU per verify
	MaxCPU     time.Duration // the slowest round's
	Iterations int

	cpus, walls []time.Duration // every round so far
}

// add takes in the rounds of m, recomputing the medians over all rounds.
func (b *bareVerify) add(m bareVerify) {
	b.cpus = append(b.cpus, m.cpus...)
	b.walls = append(b.walls, m.walls...)
	b.Iterations += m.Iterations
	cpus, walls := slices.Sorted(slices.Values(b.cpus)), slices.Sorted(slices.Values(b.walls))
	b.CPU, b.Wall = cpus[len(cpus)/2], walls[len(walls)/2]
	b.MinCPU, b.MaxCPU = cpus[0], cpus[len(cpus)-1]
}

func measureVerify(pub *rsa.PublicKey, fit string, rounds, perRound int) (bareVerify, error) {
	dot := strings.LastIndexByte(fit, '.')
	if dot < 0 {
		return bareVerify{}, fmt.Errorf("not a JWT")
	}
	input := []byte(fit[:dot])
	sig, err := base64.RawURLEncoding.DecodeString(fit[dot+1:])
	if err != nil {
		return bareVerify{}, err
	}
	verify := func() error {
		h := sha256.Sum256(input)
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig)
	}
	if err := verify(); err != nil {
		return bareVerify{}, fmt.Errorf("the FIT does not verify with the published key: %w", err)
	}

	// No collection of the tool's own heap (the FIT pool, the last run's
	// histograms) may run during the rounds: its mark assists would be
	// charged to this thread. The rounds allocate a few MiB.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range perRound / 4 { // warm caches and the CPU's clock
		_ = verify()
	}
	cpus := make([]time.Duration, rounds)
	walls := make([]time.Duration, rounds)
	for r := range rounds {
		c0, w0 := threadCPU(), time.Now()
		for range perRound {
			_ = verify()
		}
		walls[r] = time.Since(w0) / time.Duration(perRound)
		cpus[r] = (threadCPU() - c0) / time.Duration(perRound)
		if cpus[r] == 0 { // no per-thread CPU clock on this OS
			cpus[r] = walls[r]
		}
	}
	var b bareVerify
	b.add(bareVerify{cpus: cpus, walls: walls, Iterations: rounds * perRound})
	return b, nil
}
