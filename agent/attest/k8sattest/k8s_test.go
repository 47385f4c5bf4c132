package k8sattest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/castellan-dev/castellan/agent/attest/peer"
	"github.com/castellan-dev/castellan/agent/state"
	"github.com/castellan-dev/castellan/integration/kubetest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeProc writes a /proc/<pid>/cgroup for this test process, placing it
// in pod uid, container cid (cgroup v2, systemd layout).
func fakeProc(t *testing.T, root string, uid, cid string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	line := "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice/cri-containerd-" + cid + ".scope\n"
	if uid == "" {
		line = "0::/user.slice/session-1.scope\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

func containerIDOf(pod *corev1.Pod) string {
	_, id, _ := strings.Cut(pod.Status.ContainerStatuses[0].ContainerID, "://")
	return id
}

func selfPeer(t *testing.T) peer.Peer {
	t.Helper()
	p, err := peer.Pin(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return peer.Peer{PID: os.Getpid(), Process: p}
}

func TestK8sAttestorOnRealAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	env.CreateNamespace("shop")
	env.CreateServiceAccount("shop", "cart")
	env.CreateNode("node-a")
	env.CreateNode("node-b")
	here := env.CreatePod("shop", "cart-a", "cart", "node-a")
	there := env.CreatePod("shop", "cart-b", "cart", "node-b")

	root := t.TempDir()
	k, err := New(env.Client(), "node-a", Config{ProcRoot: root, PodWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := k.WaitForSync(wctx); err != nil {
		t.Fatal(err)
	}
	self := selfPeer(t)

	t.Run("process in a pod on this node", func(t *testing.T) {
		fakeProc(t, root, string(here.UID), containerIDOf(here))
		sels, err := k.Attest(ctx, self)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"ns:shop", "sa:cart", "pod-uid:" + string(here.UID), "pod-name:cart-a", "container-id:" + containerIDOf(here)} {
			if !slices.Contains(sels, state.Selector{Type: "k8s", Value: want}) {
				t.Errorf("selectors %v lack k8s:%s", sels, want)
			}
		}
	})
	refused := func(t *testing.T, reason, msg string) {
		t.Helper()
		sels, err := k.Attest(ctx, self)
		if err == nil {
			t.Fatalf("attested as %v, want refusal", sels)
		}
		if peer.ReasonOf(err) != reason || !strings.Contains(err.Error(), msg) {
			t.Fatalf("got %v (reason %s), want reason %s mentioning %q", err, peer.ReasonOf(err), reason, msg)
		}
	}
	t.Run("process in no pod", func(t *testing.T) {
		fakeProc(t, root, "", "")
		refused(t, ReasonNotInPod, "runs in no Kubernetes pod")
	})
	t.Run("pod on another node", func(t *testing.T) {
		fakeProc(t, root, string(there.UID), containerIDOf(there))
		refused(t, ReasonPodUnknown, `is not on node "node-a"`)
	})
	t.Run("container not in the pod", func(t *testing.T) {
		fakeProc(t, root, string(here.UID), strings.Repeat("ab", 32))
		refused(t, ReasonPodUnknown, "is not a container of pod shop/cart-a")
	})

	if pods := k.Pods(); len(pods) != 1 || pods[0].UID != string(here.UID) || pods[0].ServiceAccount != "cart" {
		t.Fatalf("Pods() = %+v, want only cart-a", pods)
	}
	t.Run("deleted pod is refused and leaves Pods", func(t *testing.T) {
		changes, stop := k.Watch()
		defer stop()
		gone := env.CreatePod("shop", "cart-gone", "cart", "node-a")
		select {
		case <-changes:
		case <-time.After(10 * time.Second):
			t.Fatal("no change signalled for a new pod")
		}
		if err := env.Client().CoreV1().Pods("shop").Delete(ctx, gone.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		fakeProc(t, root, string(gone.UID), containerIDOf(gone))
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && slices.ContainsFunc(k.Pods(), func(p Pod) bool { return p.UID == string(gone.UID) }) {
			time.Sleep(20 * time.Millisecond)
		}
		if slices.ContainsFunc(k.Pods(), func(p Pod) bool { return p.UID == string(gone.UID) }) {
			t.Fatal("pod being deleted still listed")
		}
		refused(t, ReasonPodUnknown, "being deleted")
	})
}

func TestK8sAttestorRefusesExitedProcess(t *testing.T) {
	root := t.TempDir()
	k := &Attestor{node: "n", procRoot: root}
	p, err := peer.Pin(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	p.Close() // a closed handle reads as an exited process
	_, err = k.Attest(context.Background(), peer.Peer{PID: os.Getpid(), Process: p})
	var ae *peer.Error
	if !errors.As(err, &ae) || ae.Reason != peer.ReasonExited {
		t.Fatalf("got %v, want ReasonExited", err)
	}
}
