package main

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"runtime"
	"slices"
	"syscall"
	"time"
)

// floor is the crypto work every CA must do for one P-256 SVID, measured
// in this process on one thread: checking the CSR's signature (proof of
// possession: SHA-256 of the request info and one ECDSA verification; the
// CSRs are parsed before the clock starts, since parsing is not crypto and
// its cost depends on the parser), and one ECDSA P-256 signature over a
// leaf-sized TBSCertificate. Issue 16 states its CPU target as a multiple
// of this floor, measured in the same run, because the machine's speed
// varies from run to run.
type floor struct {
	check, sign time.Duration // per SVID, thread CPU time
}

func (f floor) total() time.Duration { return f.check + f.sign }

func (f floor) String() string {
	return fmt.Sprintf("%.0f µs per SVID (CSR signature check %.0f µs + ECDSA P-256 signature %.0f µs, one thread's CPU)",
		us(f.total()), us(f.check), us(f.sign))
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// measureFloor times n rounds of each half of the floor over csrs (all of
// which must parse and verify).
func measureFloor(csrs [][]byte, n int) (floor, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	reqs := make([]*x509.CertificateRequest, len(csrs))
	for i, der := range csrs {
		req, err := x509.ParseCertificateRequest(der)
		if err != nil {
			return floor{}, err
		}
		reqs[i] = req
	}
	check, err := threadCPU(func() error {
		for i := range n {
			if err := reqs[i%len(reqs)].CheckSignature(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return floor{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return floor{}, err
	}
	tbs := make([]byte, 450) // about a leaf's TBSCertificate
	sign, err := threadCPU(func() error {
		for range n {
			digest := sha256.Sum256(tbs)
			if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
				return err
			}
		}
		return nil
	})
	return floor{check: check / time.Duration(n), sign: sign / time.Duration(n)}, err
}

// medianFloor measures the floor samples times over csrs, n rounds each,
// and returns the measurement with the median total.
func medianFloor(csrs [][]byte, samples, n int) (floor, error) {
	fs := make([]floor, samples)
	for i := range fs {
		f, err := measureFloor(csrs, n)
		if err != nil {
			return floor{}, err
		}
		fs[i] = f
	}
	slices.SortFunc(fs, func(a, b floor) int { return cmp.Compare(a.total(), b.total()) })
	return fs[len(fs)/2], nil
}

// threadCPU returns the CPU time the calling (locked) thread spent in f.
func threadCPU(f func() error) (time.Duration, error) {
	before, err := threadUsage()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := threadUsage()
	return after - before, err
}

func threadUsage() (time.Duration, error) {
	const rusageThread = 1 // RUSAGE_THREAD
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
