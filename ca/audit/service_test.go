package audit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	auditv1 "github.com/castellan-dev/castellan/api/castellan/audit/v1"
	"github.com/castellan-dev/castellan/ca/ledger"
	"github.com/castellan-dev/castellan/ca/ledger/entry"
	"github.com/castellan-dev/castellan/ca/verifier"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func openLedger(t *testing.T, n int) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	evs := make([]entry.Event, n)
	for i := range evs {
		evs[i] = entry.Event{
			Kind: entry.KindIssuance, Serial: fmt.Sprintf("%x", 0xa000+i),
			SPIFFEID: fmt.Sprintf("spiffe://cluster.local/ns/bookinfo/sa/svc%d", i%4), Node: "node-1",
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), CertDER: []byte{1, 2, 3},
		}
	}
	if _, err := l.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
	return l
}

// serveUnix serves svc on a Unix socket, as the admin socket does.
func serveUnix(t *testing.T, svc *Service) auditv1.AuditServiceClient {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	svc.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return auditv1.NewAuditServiceClient(conn)
}

func TestGetProofVerifiesWithTransparencyDevAlone(t *testing.T) {
	l := openLedger(t, 37)
	c := serveUnix(t, NewService(l, Config{Authorizer: AdminAuthorizer()}))
	ctx := context.Background()
	cpResp, err := c.Checkpoint(ctx, &auditv1.CheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, &auditv1.GetRequest{Serial: "A00C"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Event.GetIndex() != 12 || got.Event.GetSerial() != "a00c" {
		t.Fatalf("event = %v", got.Event)
	}
	v, err := note.NewVerifier(cpResp.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, _, err := log.ParseCheckpoint(got.Proof.Checkpoint, cpResp.Origin, v)
	if err != nil {
		t.Fatal(err)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(got.Event.Data)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, got.Proof.LeafIndex, cp.Size, leaf, got.Proof.Hashes, cp.Hash); err != nil {
		t.Fatal(err)
	}
}

func TestListPagesAndRefusesUnboundedPages(t *testing.T) {
	l := openLedger(t, 25)
	c := serveUnix(t, NewService(l, Config{Authorizer: AdminAuthorizer()}))
	ctx := context.Background()
	n, token := 0, ""
	for pages := 0; pages < 10; pages++ {
		resp, err := c.List(ctx, &auditv1.ListRequest{SpiffeId: "spiffe://cluster.local/ns/bookinfo/sa/svc1", PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		n += len(resp.Events)
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	if n != 6 {
		t.Fatalf("listed %d events for svc1, want 6", n)
	}
	_, err := c.List(ctx, &auditv1.ListRequest{PageSize: 100000})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("huge page: %v", err)
	}
}

func TestRevokeUnknownIsNotFoundAndKnownIsLogged(t *testing.T) {
	l := openLedger(t, 3)
	c := serveUnix(t, NewService(l, Config{Authorizer: AdminAuthorizer()}))
	ctx := context.Background()
	if _, err := c.Revoke(ctx, &auditv1.RevokeRequest{Serial: "ffff", Reason: "x"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown serial: %v", err)
	}
	r, err := c.Revoke(ctx, &auditv1.RevokeRequest{Serial: "a001", Reason: "keyCompromise"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Revocation.Kind != "revocation" || r.Revocation.Index != 3 {
		t.Fatalf("revocation = %v", r.Revocation)
	}
	if _, err := c.Revoke(ctx, &auditv1.RevokeRequest{Serial: "a001"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second revoke: %v", err)
	}
	if got := l.RevokedSerials(time.Now()); len(got) != 1 || got[0] != "a001" {
		t.Fatalf("revoked serials %v", got)
	}
	list, err := c.List(ctx, &auditv1.ListRequest{State: auditv1.State_STATE_REVOKED, PageSize: 10})
	if err != nil || len(list.Events) != 1 || list.Events[0].Revocation.GetReason() != "keyCompromise" {
		t.Fatalf("revoked list: %v %v", list, err)
	}
}

func TestConsistencyExportAndWatch(t *testing.T) {
	l := openLedger(t, 10)
	c := serveUnix(t, NewService(l, Config{Authorizer: AdminAuthorizer()}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old, err := c.Checkpoint(ctx, &auditv1.CheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, &auditv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The header says where the watch starts: from then on, every event
	// appended reaches the stream.
	hdr, err := w.Header()
	if err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(WatchFromHeader); len(got) != 1 || got[0] != "10" {
		t.Fatalf("%s = %q, want [10] (the log size when the watch began)", WatchFromHeader, got)
	}
	if _, err := l.Append(ctx, entry.Event{Kind: entry.KindJoinTokenUse, Node: "node-9"}); err != nil {
		t.Fatal(err)
	}
	ev, err := w.Recv()
	if err != nil || ev.Event.Index != 10 || ev.Event.Node != "node-9" {
		t.Fatalf("watch got %v %v", ev, err)
	}
	cons, err := c.Consistency(ctx, &auditv1.ConsistencyRequest{FromSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := note.NewVerifier(old.VerifierKey)
	c1, _, _, err := log.ParseCheckpoint(old.Checkpoint, old.Origin, v)
	if err != nil {
		t.Fatal(err)
	}
	c2, _, _, err := log.ParseCheckpoint(cons.Checkpoint, old.Origin, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, c1.Size, c2.Size, cons.Hashes, c1.Hash, c2.Hash); err != nil {
		t.Fatal(err)
	}
	exp, err := c.Export(ctx, &auditv1.ExportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var leaves []verifier.Leaf
	for {
		m, err := exp.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, lf := range m.Leaves {
			leaves = append(leaves, verifier.Leaf{Index: lf.Index, Data: lf.Data, Hash: lf.LeafHash})
		}
	}
	tv := verifier.NewTree(c2)
	for _, lf := range leaves {
		tv.Add(lf)
	}
	if rep := tv.Finish(); !rep.OK() || rep.Entries != 11 {
		t.Fatalf("export does not verify: %+v", rep)
	}
}

func TestServiceWithoutAuthorizerRefusesEveryone(t *testing.T) {
	c := serveUnix(t, NewService(openLedger(t, 1), Config{}))
	_, err := c.Checkpoint(context.Background(), &auditv1.CheckpointRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("err = %v", err)
	}
}

func TestMTLSCallersMustBeAdmins(t *testing.T) {
	l := openLedger(t, 1)
	ca := newTestCA(t)
	admin := spiffeid.RequireFromString("spiffe://cluster.local/ops/auditor")
	svc := NewService(l, Config{Authorizer: AdminAuthorizer(admin)})
	serverCert := ca.issue(t, "spiffe://cluster.local/castellan/server")
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert}, ClientCAs: ca.pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13,
	})))
	svc.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	call := func(cert *tls.Certificate) error {
		cfg := &tls.Config{RootCAs: ca.pool, ServerName: "castellan", MinVersion: tls.VersionTLS13}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = auditv1.NewAuditServiceClient(conn).Checkpoint(context.Background(), &auditv1.CheckpointRequest{})
		return err
	}
	adminCert := ca.issue(t, admin.String())
	if err := call(&adminCert); err != nil {
		t.Fatalf("admin refused: %v", err)
	}
	other := ca.issue(t, "spiffe://cluster.local/ns/bookinfo/sa/reviews")
	if err := call(&other); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("workload identity: %v", err)
	}
	if err := call(nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no client cert: %v", err)
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, DNSNames: []string{"castellan"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestWatchFromIndexReplaysThenFollows starts a watch inside the log: the
// header names the requested index, the backlog arrives in order, then an
// event appended afterwards.
func TestWatchFromIndexReplaysThenFollows(t *testing.T) {
	l := openLedger(t, 5)
	c := serveUnix(t, NewService(l, Config{Authorizer: AdminAuthorizer()}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	from := uint64(3)
	w, err := c.Watch(ctx, &auditv1.WatchRequest{FromIndex: &from})
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := w.Header()
	if err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(WatchFromHeader); len(got) != 1 || got[0] != "3" {
		t.Fatalf("%s = %q, want [3]", WatchFromHeader, got)
	}
	if _, err := l.Append(ctx, entry.Event{Kind: entry.KindJoinTokenUse, Node: "node-late"}); err != nil {
		t.Fatal(err)
	}
	for want := uint64(3); want <= 5; want++ {
		ev, err := w.Recv()
		if err != nil || ev.Event.Index != want {
			t.Fatalf("event %d: got %v %v", want, ev, err)
		}
		if want == 5 && ev.Event.Node != "node-late" {
			t.Fatalf("event 5 is %v, want the appended one", ev.Event)
		}
	}
}

// An operator may type a serial as openssl prints it (colons, upper case,
// leading zeros); it revokes the same certificate. Junk is refused with
// InvalidArgument saying what is wrong, and revokes nothing.
func TestRevokeReadsTypedSerialsAndRefusesJunk(t *testing.T) {
	l := openLedger(t, 3)
	c := serveUnix(t, NewService(l, Config{Authorizer: AdminAuthorizer()}))
	ctx := context.Background()
	for _, tc := range []struct{ serial, says string }{
		{"-a001", "not a hexadecimal digit"},
		{"a0 01", "not a hexadecimal digit"},
		{"a001g", "not a hexadecimal digit"},
		{"", "required"},
		{"0x", "empty"},
		{strings.Repeat("f", 41), "significant digits"},
		{strings.Repeat("0", 100000) + "a001", "characters"},
	} {
		_, err := c.Revoke(ctx, &auditv1.RevokeRequest{Serial: tc.serial, Reason: "x"})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.says) {
			t.Errorf("revoke %.20q: %v, want InvalidArgument saying %q", tc.serial, err, tc.says)
		}
		if _, err := c.Get(ctx, &auditv1.GetRequest{Serial: tc.serial}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("get %.20q: %v, want InvalidArgument", tc.serial, err)
		}
	}
	if got := l.RevokedSerials(time.Now()); len(got) != 0 {
		t.Fatalf("junk revoked %v", got)
	}
	if _, err := c.Revoke(ctx, &auditv1.RevokeRequest{Serial: " 00:A0:01 ", Reason: "keyCompromise"}); err != nil {
		t.Fatalf("revoke in openssl's form: %v", err)
	}
	if got := l.RevokedSerials(time.Now()); len(got) != 1 || got[0] != "a001" {
		t.Fatalf("revoked serials %v, want [a001]", got)
	}
	if _, err := c.Revoke(ctx, &auditv1.RevokeRequest{Serial: "0A001"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("revoke again in another form: %v, want AlreadyExists", err)
	}
}
