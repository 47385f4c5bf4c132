// Command compare measures Castellan and SPIRE side by side on one
// machine ("make bench-compare"): castellan-server (bbolt ledger, synced on
// every commit; quotas out of the way) and SPIRE's own spire-server v1.13.3
// (SQLite datastore, audit log off, rate limits off), both with P-256 CA
// keys and one-hour X509-SVIDs, each driven by the same load generator
// over mutual TLS on 127.0.0.1 with the SVID of an agent attested by join
// token, with the same P-256 CSRs:
//   - batches of 50 CSRs from 4 callers (Castellan's BatchSignX509SVID,
//     SPIRE's BatchNewX509SVID);
//   - one CSR per call from 1, 8 and 32 callers (Castellan's
//     SignX509SVID, SPIRE's BatchNewX509SVID with one CSR, which is how a
//     SPIRE agent asks).
//
// For each it prints SVIDs/s, the median call latency and the server
// process's CPU per 1,000 SVIDs, and the ratios. It lives in a module of
// its own so that SPIRE's API never enters Castellan's go.mod.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"time"
)

func main() {
	castellanBin := flag.String("castellan-server", "bin/castellan-server", "castellan-server binary")
	spireBin := flag.String("spire-server", "", "spire-server binary (integration/spire/tool/build-server.sh prints its path)")
	d := flag.Duration("duration", 5*time.Second, "how long each measurement runs, after a second of warm-up")
	rounds := flag.Int("rounds", 2, "how many times every measurement is repeated (sides alternate who goes first)")
	keep := flag.Bool("keep", false, "keep the servers' data directories and logs")
	only := flag.String("only", "", "measure only the cells whose label matches this regular expression (e.g. 'batch')")
	flag.Parse()
	pick, err := regexp.Compile(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare: --only:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, *castellanBin, *spireBin, *d, *rounds, *keep, pick); err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
}

// run starts both servers in a temporary directory, measures every cell
// and prints the table to w. The directory (the servers' data and logs) is
// removed unless keep is set or something failed.
func run(ctx context.Context, w io.Writer, castellanBin, spireBin string, d time.Duration, rounds int, keep bool, pick *regexp.Regexp) (err error) {
	if castellanBin == "" || spireBin == "" {
		return fmt.Errorf("--castellan-server and --spire-server are required")
	}
	dir, err := os.MkdirTemp("", "bench-compare-")
	if err != nil {
		return err
	}
	defer func() {
		if keep || err != nil {
			fmt.Fprintln(os.Stderr, "bench-compare: the servers' data and logs are in", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	c, err := startCastellan(ctx, castellanBin, dir)
	if err != nil {
		return err
	}
	defer c.close()
	s, err := startSpire(ctx, spireBin, dir)
	if err != nil {
		return err
	}
	defer s.close()
	csrs, err := workloadCSRs(castellanID, 1000)
	if err != nil {
		return err
	}
	before, err := medianFloor(csrs, floorSamples, floorRounds)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Castellan (%s) vs SPIRE v1.13.3 (%s); %s per measurement, %d rounds\n", castellanBin, spireBin, d, rounds)
	fmt.Fprintf(w, "Crypto floor before the run: %s\n\n", before)
	fmt.Fprintln(w, "| work | round | Castellan SVIDs/s, p50, server CPU-ms/1000 | SPIRE SVIDs/s, p50, server CPU-ms/1000 | rate ratio | CPU ratio (SPIRE/Castellan) | floor µs | Castellan CPU ÷ floor |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, cl := range cells {
		if !pick.MatchString(cl.label) {
			continue
		}
		if err := measureCell(ctx, w, c, s, cl, csrs, d, rounds); err != nil {
			return err
		}
	}
	after, err := medianFloor(csrs, floorSamples, floorRounds)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nCrypto floor after the run: %s\n", after)
	return nil
}

// The floor is the median of floorSamples measurements of floorRounds CSR
// checks and signatures each: on a shared machine a single measurement
// now and then comes out 10-25% low or high.
const (
	floorSamples = 5
	floorRounds  = 1000
)

// measureCell measures cl rounds times, alternating which side goes first,
// and prints one row per round. Each round's Castellan CPU is divided by
// the floor measured just before that round (the machine's speed drifts
// within a run).
func measureCell(ctx context.Context, w io.Writer, c, s side, cl cell, csrs [][]byte, d time.Duration, rounds int) error {
	for r := range rounds {
		fl, err := medianFloor(csrs, floorSamples, floorRounds)
		if err != nil {
			return err
		}
		sides := []side{c, s}
		if r%2 == 1 {
			sides = []side{s, c}
		}
		res := map[string]result{}
		for _, sd := range sides {
			m, err := measure(ctx, sd, cl, csrs, d)
			if err != nil {
				return err
			}
			res[sd.name()] = m
		}
		ca, sp := res["Castellan"], res["SPIRE"]
		fmt.Fprintf(w, "| %s | %d | %s | %s | %.2f | %.2f | %.0f | %.2f |\n", cl.label, r+1, cellText(ca), cellText(sp),
			ca.rate()/sp.rate(), sp.cpuPer1000()/ca.cpuPer1000(), us(fl.total()), ca.cpuPer1000()/us(fl.total()))
	}
	return nil
}

func cellText(r result) string {
	return fmt.Sprintf("%.0f, %.2f ms, %.0f", r.rate(), float64(r.p50.Microseconds())/1000, r.cpuPer1000())
}
