package catest

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	cav1 "github.com/castellan-dev/castellan/api/castellan/ca/v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Fault is what a call suffers before it reaches the real CA. The zero
// Fault lets calls through.
type Fault struct {
	// Delay holds the call this long first (less if the caller gives up).
	Delay time.Duration
	// Hang holds the call until the caller gives up: it never answers.
	Hang bool
	// Err, a gRPC status error, is the call's answer in place of the
	// CA's.
	Err error
}

// Method names of castellan.ca.v1 calls, for Inject.
const (
	MethodBatchSign = "BatchSignX509SVID"
	MethodSign      = "SignX509SVID"
	MethodSyncAgent = "SyncAgent"
	MethodRenew     = "RenewAgent"
	MethodAttest    = "AttestAgent"
)

// faults are the faults injected into one scope (the CA or a replica),
// by method ("" for every method), and its call counts.
type faults struct {
	mu      sync.Mutex
	byCall  map[string]*injected
	calls   int // CA calls that reached the scope, faulted ones included
	batches int // BatchSignX509SVID calls, faulted ones included
	signed  int // SVIDs in BatchSignX509SVID answers of the real CA
}

// injected is one injected fault and how many calls it still applies to
// (< 0: every call).
type injected struct {
	Fault
	left int
}

// inject makes the next n calls of method (every call if n < 0) suffer f.
func (fs *faults) inject(method string, n int, f Fault) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.byCall == nil {
		fs.byCall = map[string]*injected{}
	}
	if f == (Fault{}) || n == 0 {
		delete(fs.byCall, method)
		return
	}
	fs.byCall[method] = &injected{Fault: f, left: n}
}

// admit counts a call of method and returns the fault it must suffer.
func (fs *faults) admit(method string) Fault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.calls++
	if method == MethodBatchSign {
		fs.batches++
	}
	for _, key := range []string{method, ""} {
		in, ok := fs.byCall[key]
		if !ok {
			continue
		}
		if in.left > 0 {
			if in.left--; in.left == 0 {
				delete(fs.byCall, key)
			}
		}
		return in.Fault
	}
	return Fault{}
}

// countSigned adds the SVIDs of one BatchSignX509SVID answer.
func (fs *faults) countSigned(n int) {
	fs.mu.Lock()
	fs.signed += n
	fs.mu.Unlock()
}

// Inject makes the next n calls of method (a castellan.ca.v1 method such
// as MethodBatchSign; "" for every method; every call if n < 0) suffer f
// on every replica. A zero Fault, or n 0, removes the method's fault.
func (ca *CA) Inject(method string, n int, f Fault) { ca.faults.inject(method, n, f) }

// FailSigning makes every signing call fail with err (nil restores it).
func (ca *CA) FailSigning(err error) {
	for _, m := range []string{MethodBatchSign, MethodSign} {
		ca.faults.inject(m, -1, Fault{Err: err})
	}
}

// Counts returns how many BatchSignX509SVID calls reached the CA (faulted
// ones included) and how many SVIDs its answers carried.
func (ca *CA) Counts() (batches, signed int) {
	ca.faults.mu.Lock()
	defer ca.faults.mu.Unlock()
	return ca.faults.batches, ca.faults.signed
}

// caMethod returns the castellan.ca.v1 method of an HTTP/2 gRPC request
// path, or "" for another service.
func caMethod(path string) string {
	m, ok := strings.CutPrefix(path, "/"+cav1.CertificateAuthorityService_ServiceDesc.ServiceName+"/")
	if !ok {
		return ""
	}
	return m
}

// suffer applies f to the call of r; it reports whether the call was
// answered (with f.Err, or not at all because the caller gave up).
func suffer(w http.ResponseWriter, r *http.Request, f Fault) bool {
	if f.Delay > 0 || f.Hang {
		var wait <-chan time.Time
		if !f.Hang {
			t := time.NewTimer(f.Delay)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-r.Context().Done():
			return true
		case <-wait:
		}
	}
	if f.Err == nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	writeStatus(w, status.Convert(f.Err))
	return true
}

// writeStatus answers a gRPC call with st alone (a trailers-only
// response), details included.
func writeStatus(w http.ResponseWriter, st *status.Status) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(int(st.Code())))
	h.Set("Grpc-Message", encodeMessage(st.Message()))
	if len(st.Details()) > 0 {
		if b, err := proto.Marshal(st.Proto()); err == nil {
			h.Set("Grpc-Status-Details-Bin", base64.RawStdEncoding.EncodeToString(b))
		}
	}
	w.WriteHeader(http.StatusOK)
}

// encodeMessage percent-encodes a grpc-message as the gRPC HTTP/2
// protocol asks (bytes outside printable ASCII, and '%').
func encodeMessage(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// recorder passes a unary answer through and keeps a copy of its body.
type recorder struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.body.Write(p)
	return r.ResponseWriter.Write(p)
}

// Flush implements http.Flusher, which gRPC requires.
func (r *recorder) Flush() { r.ResponseWriter.(http.Flusher).Flush() }

// signedIn returns the SVIDs in a recorded BatchSignX509SVID answer (one
// gRPC message: a flag byte, a 4-byte length, the message).
func signedIn(body []byte) int {
	if len(body) < 5 || body[0] != 0 {
		return 0
	}
	n := binary.BigEndian.Uint32(body[1:5])
	if uint64(len(body)-5) < uint64(n) {
		return 0
	}
	var resp cav1.BatchSignX509SVIDResponse
	if proto.Unmarshal(body[5:5+n], &resp) != nil {
		return 0
	}
	signed := 0
	for _, r := range resp.GetResults() {
		if r.GetSvid() != nil {
			signed++
		}
	}
	return signed
}
