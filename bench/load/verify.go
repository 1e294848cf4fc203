package main

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"
)

// bareVerify is the cost floor of one request: SHA-256 of a real FIT's signing
// input and rsa.VerifyPKCS1v15 with the same 2048-bit key, single-threaded,
// in CPU time of the measuring thread (wall time is shown beside it).
type bareVerify struct {
	CPU        time.Duration // median over rounds, per verify
	Wall       time.Duration // median over rounds, per verify
	Iterations int
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
	slices.Sort(cpus)
	slices.Sort(walls)
	return bareVerify{CPU: cpus[rounds/2], Wall: walls[rounds/2], Iterations: rounds * perRound}, nil
}
