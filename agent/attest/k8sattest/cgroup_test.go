package k8sattest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	testUID   = "2c48913c-b29f-11e7-9350-020968147796"
	testUIDUS = "2c48913c_b29f_11e7_9350_020968147796"
	testCID   = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	otherCID  = "a5ee6aa39eb9c1d6d3a7a7b8cba8a3b3e1cbcbbb1e8d14e1a8a1a5ec6db9a0c1"
)

func TestParseCgroups(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want PodContainer
	}{
		{
			name: "v1 cgroupfs burstable",
			in: "12:pids:/kubepods/burstable/pod" + testUID + "/" + testCID + "\n" +
				"11:memory:/kubepods/burstable/pod" + testUID + "/" + testCID + "\n" +
				"1:name=systemd:/kubepods/burstable/pod" + testUID + "/" + testCID + "\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "v1 cgroupfs guaranteed (no QoS level)",
			in:   "4:cpu,cpuacct:/kubepods/pod" + testUID + "/" + testCID + "\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "v1 cgroupfs besteffort",
			in:   "8:pids:/kubepods/besteffort/pod" + testUID + "/" + testCID + "\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "v2 systemd containerd",
			in:   "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDUS + ".slice/cri-containerd-" + testCID + ".scope\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "v2 systemd guaranteed",
			in:   "0::/kubepods.slice/kubepods-pod" + testUIDUS + ".slice/cri-containerd-" + testCID + ".scope\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "v1 systemd docker",
			in: "10:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testUIDUS + ".slice/docker-" + testCID + ".scope\n" +
				"1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testUIDUS + ".slice/docker-" + testCID + ".scope\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "v2 systemd crio",
			in:   "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDUS + ".slice/crio-" + testCID + ".scope\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "crio conmon is the pod, not the container",
			in:   "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDUS + ".slice/crio-conmon-" + testCID + ".scope\n",
			want: PodContainer{PodUID: testUID},
		},
		{
			name: "containerd systemd colon form (kind)",
			in:   "0::/system.slice/containerd.service/kubepods-burstable-pod" + testUIDUS + ".slice:cri-containerd:" + testCID + "\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "nested under a node container (kind, cgroupfs)",
			in:   "0::/docker/" + otherCID + "/kubepods/burstable/pod" + testUID + "/" + testCID + "\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "hybrid v1+v2 with only some hierarchies in the pod",
			in: "9:name=systemd:/\n8:pids:/kubepods/besteffort/pod" + testUID + "/" + testCID + "\n" +
				"4:memory:/process_api/d0cca3312ffc0489995b70a0bbe12d5b\n0::/\n",
			want: PodContainer{PodUID: testUID, ContainerID: testCID},
		},
		{
			name: "process in the pod cgroup itself",
			in:   "0::/kubepods/besteffort/pod" + testUID + "\n",
			want: PodContainer{PodUID: testUID},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCgroups([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseCgroups: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseCgroupsRefusesProcessesOutsidePods(t *testing.T) {
	for name, in := range map[string]string{
		"host process v2":            "0::/user.slice/user-1000.slice/session-2.scope\n",
		"host process hybrid":        "9:name=systemd:/\n8:pids:/\n0::/\n",
		"docker container":           "0::/system.slice/docker-" + testCID + ".scope\n",
		"pod-like name, no kubepods": "0::/mypods/pod" + testUID + "/" + testCID + "\n",
		// systemd delegates a user manager's subtree to that unprivileged
		// user, who may create cgroups named like a pod's in it.
		"user-made kubepods v2": "0::/user.slice/user-1000.slice/user@1000.service/kubepods/besteffort/pod" + testUID + "/" + testCID + "\n",
		"user-made pod cgroup":  "0::/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods/pod" + testUID + "\n",
		"user-made kubepods v1": "9:name=systemd:/user.slice/user-1000.slice/user@1000.service/kubepods/pod" + testUID + "/" + testCID + "\n" +
			"8:pids:/user.slice/user-1000.slice/user@1000.service\n",
		"empty": "",
	} {
		t.Run(name, func(t *testing.T) {
			pc, err := ParseCgroups([]byte(in))
			if !errors.Is(err, ErrNotInPod) {
				t.Fatalf("got %+v, %v; want ErrNotInPod", pc, err)
			}
		})
	}
}

func TestParseCgroupsRejectsInconsistentOrMalformed(t *testing.T) {
	for name, in := range map[string]string{
		"two pods": "8:pids:/kubepods/besteffort/pod" + testUID + "/" + testCID + "\n" +
			"4:memory:/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/" + testCID + "\n",
		"two containers": "8:pids:/kubepods/besteffort/pod" + testUID + "/" + testCID + "\n" +
			"4:memory:/kubepods/besteffort/pod" + testUID + "/" + otherCID + "\n",
		"no path field": "8:pids\n",
	} {
		t.Run(name, func(t *testing.T) {
			pc, err := ParseCgroups([]byte(in))
			if err == nil || errors.Is(err, ErrNotInPod) {
				t.Fatalf("got %+v, %v; want a parse error", pc, err)
			}
			if !strings.HasPrefix(err.Error(), "attest: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestReadCgroupsFromProcRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "42"), 0o755); err != nil {
		t.Fatal(err)
	}
	line := "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testUIDUS + ".slice/cri-containerd-" + testCID + ".scope\n"
	if err := os.WriteFile(filepath.Join(root, "42", "cgroup"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCgroups(root, 42)
	if err != nil {
		t.Fatal(err)
	}
	if got.PodUID != testUID || got.ContainerID != testCID {
		t.Fatalf("got %+v", got)
	}
	if _, err := ReadCgroups(root, 43); err == nil {
		t.Fatal("missing process read without error")
	}
}

func TestReadCgroupsOfThisProcessIsNotInPod(t *testing.T) {
	// The test runner is not in a pod: the real /proc/self/cgroup must be
	// parsed without error and refused.
	_, err := ReadCgroups("/proc", os.Getpid())
	if !errors.Is(err, ErrNotInPod) {
		t.Fatalf("got %v, want ErrNotInPod", err)
	}
}

func FuzzParseCgroups(f *testing.F) {
	f.Add([]byte("0::/kubepods/besteffort/pod" + testUID + "/" + testCID + "\n"))
	f.Add([]byte("0::/kubepods.slice/kubepods-pod" + testUIDUS + ".slice/cri-containerd-" + testCID + ".scope\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pc, err := ParseCgroups(data)
		if err == nil && (len(pc.PodUID) != 36 || strings.Contains(pc.PodUID, "_")) {
			t.Fatalf("accepted malformed pod UID %q", pc.PodUID)
		}
	})
}
