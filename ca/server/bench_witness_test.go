package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"github.com/castellan-dev/castellan/ca/server/logproof"
	"github.com/castellan-dev/castellan/ca/witness"
	"github.com/castellan-dev/castellan/internal/freeport"
	"golang.org/x/mod/sumdb/note"
)

// BenchmarkIssuanceWitnessed measures batch issuance (as
// BenchmarkBatchIssuanceGRPC: 4 agents, batches of 100 P-256 CSRs) with the
// issuance log witnessed and without, in one run of interleaved pairs.
// "off" issues with no witness. "on" issues while the CA's Witnesser (as
// castellan-server runs it with --witness and a --witness-interval of 1s)
// signs checkpoints, proves consistency, submits them to a real
// omniwitness process on the same machine and stores each cosigned
// checkpoint in the ledger. "on" reports its rate as a ratio of its
// pair's "off" run (on/off), the witnessing rounds per second, and how
// many entries the last witnessed checkpoint lagged behind the log at the
// end. cpu-µs/SVID counts this process only, not the omniwitness.
//
// The witness is the omniwitness built by integration/omniwitness/build.sh,
// found through CASTELLAN_OMNIWITNESS or in ~/.cache/castellan/bin; "on"
// is skipped without it (it fails under CASTELLAN_REQUIRE_OMNIWITNESS=1).
func BenchmarkIssuanceWitnessed(b *testing.B) {
	for pair := 1; pair <= witnessBenchPairs; pair++ {
		var offRate float64
		b.Run(fmt.Sprintf("pair=%d/witness=off", pair), func(b *testing.B) {
			offRate = benchWitnessed(b, false, 0)
		})
		b.Run(fmt.Sprintf("pair=%d/witness=on", pair), func(b *testing.B) {
			benchWitnessed(b, true, offRate)
		})
	}
}

// witnessBenchPairs is how many off/on pairs BenchmarkIssuanceWitnessed
// runs, interleaved, so that a shared machine's load drifts over both.
const witnessBenchPairs = 3

// benchWitnessed runs one side of a pair and returns its SVIDs/s; with
// the log witnessed, it reports its rate over offRate and the witnessing.
func benchWitnessed(b *testing.B, on bool, offRate float64) float64 {
	e := newEnv(b)
	agents := make([]cav1.CertificateAuthorityServiceClient, benchAgents)
	for i := range agents {
		node := fmt.Sprintf("node-%d", i)
		e.addEntry(b, appID, node)
		agents[i] = e.agentClient(b, node)
	}
	var rounds *atomic.Int64
	if on {
		rounds = witnessLedger(b, e)
	}
	start := time.Now()
	rate := measureBatches(b, agents)
	if !on {
		return rate
	}
	if offRate > 0 {
		b.ReportMetric(rate/offRate, "on/off")
	}
	b.ReportMetric(float64(rounds.Load())/time.Since(start).Seconds(), "witness-rounds/s")
	if size, err := logproof.WitnessedSize(e.ledger.WitnessedCheckpoint()); err == nil {
		b.ReportMetric(float64(e.ledger.Size()-size), "witness-lag-entries")
	}
	return rate
}

// measureBatches runs runBatches and returns its SVIDs/s over the timed
// part alone.
func measureBatches(b *testing.B, agents []cav1.CertificateAuthorityServiceClient) float64 {
	runBatches(b, agents, cpuTime)
	return float64(b.N*benchBatchSize) / b.Elapsed().Seconds()
}

// witnessLedger starts an omniwitness of e's log and a Witnesser that
// keeps the log witnessed by it until b ends; it waits for the first
// cosigned checkpoint and returns the count of witnessing rounds that
// produced one.
func witnessLedger(b *testing.B, e *env) *atomic.Int64 {
	b.Helper()
	url, vkey := startBenchOmniwitness(b, e.ledger.Origin(), e.ledger.VerifierKey())
	p, err := witness.ParsePolicy(1, []string{"w1=" + url + "+" + vkey})
	if err != nil {
		b.Fatal(err)
	}
	rounds := new(atomic.Int64)
	w := witness.NewWitnesser(witness.New(p, witness.ClientConfig{}), e.ledger, witness.WitnesserConfig{
		Interval: time.Second,
		OnWitnessed: func(ctx context.Context, cp []byte) error {
			rounds.Add(1)
			return e.ledger.StoreWitnessedCheckpoint(ctx, cp)
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for e.ledger.WitnessedCheckpoint() == nil {
		if time.Now().After(deadline) {
			b.Fatal("no cosigned checkpoint from omniwitness within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rounds.Store(0)
	return rounds
}

// benchOmniwitness returns the omniwitness binary, or skips b.
func benchOmniwitness(b *testing.B) string {
	b.Helper()
	p := os.Getenv("CASTELLAN_OMNIWITNESS")
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache", "castellan", "bin", "omniwitness")
	}
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p
	}
	msg := fmt.Sprintf("no omniwitness at %s (build it with ./integration/omniwitness/build.sh)", p)
	if os.Getenv("CASTELLAN_REQUIRE_OMNIWITNESS") == "1" {
		b.Fatal(msg)
	}
	b.Skip(msg)
	return ""
}

// startBenchOmniwitness runs an omniwitness of the log (origin, logVKey)
// with a new key on a free loopback port until b ends, and returns its
// URL and cosignature/v1 verifier key.
func startBenchOmniwitness(b *testing.B, origin, logVKey string) (string, string) {
	b.Helper()
	bin, dir := benchOmniwitness(b), b.TempDir()
	skey, vkey := benchWitnessKey(b, "bench.witness/w1")
	files := map[string]string{
		"witness.key": skey,
		"logs.yaml":   fmt.Sprintf("Logs:\n  - Origin: %s\n    PublicKey: %s\n", origin, logVKey),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	addr, err := freeport.Addr()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--listen="+addr, "--metrics_listen=", "--db_file="+filepath.Join(dir, "witness.db"),
		"--private_key_path="+filepath.Join(dir, "witness.key"), "--additional_logs="+filepath.Join(dir, "logs.yaml"))
	cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	if err := waitListening(addr, exited); err != nil {
		b.Fatalf("omniwitness: %v", err)
	}
	return "http://" + addr, vkey
}

// waitListening waits up to 30s for addr to accept connections.
func waitListening(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited before listening")
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			return c.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not listening on %s after 30s", addr)
}

// benchWitnessKey returns a new witness key as omniwitness reads it (a
// note private key) and its C2SP cosignature/v1 verifier key.
func benchWitnessKey(b *testing.B, name string) (skey, vkey string) {
	b.Helper()
	skey, plainVKey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.SplitN(plainVKey, "+", 3)[2])
	if err != nil || len(raw) != 33 {
		b.Fatalf("verifier key %q: %v", plainVKey, err)
	}
	typed := append([]byte{0x04}, raw[1:]...)
	h := sha256.Sum256(append([]byte(name+"\n"), typed...))
	return skey, fmt.Sprintf("%s+%08x+%s", name, binary.BigEndian.Uint32(h[:4]), base64.StdEncoding.EncodeToString(typed))
}
