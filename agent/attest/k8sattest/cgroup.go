package k8sattest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// ErrNotInPod is returned (wrapped) when a process's cgroups place it in no
// Kubernetes pod.
var ErrNotInPod = errors.New("process is not in a Kubernetes pod cgroup")

// maxCgroupFile bounds how much of /proc/PID/cgroup is read.
const maxCgroupFile = 64 << 10

// PodContainer is where the kubelet placed a process: the UID of its pod
// and, unless the process sits in the pod's own cgroup, the ID of its
// container as the container runtime reports it (64 hex digits, no
// "containerd://" scheme).
type PodContainer struct {
	PodUID      string
	ContainerID string
}

var (
	// podSegment matches the pod level of a kubelet cgroup path:
	// "pod<uid>" (cgroupfs driver) or "kubepods[-<qos>]-pod<uid_with_underscores>.slice"
	// (systemd driver). Group 1 is the UID in either spelling.
	podSegment = regexp.MustCompile(`^(?:pod|kubepods(?:-[a-z]+)?-pod)([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$`)
	// containerSegment matches the container level below a pod:
	// "<id>" (cgroupfs), "<runtime>-<id>.scope" (systemd) for the runtimes
	// docker, cri-containerd and crio. A conmon scope ("crio-conmon-<id>")
	// is crio's monitor process, not the container, and does not match.
	containerSegment = regexp.MustCompile(`^(?:(?:docker|cri-containerd|crio|containerd)-)?([0-9a-f]{64})(?:\.scope)?$`)
)

// ParseCgroups finds the pod and container of a process from the contents
// of its /proc/PID/cgroup, in any layout the kubelet produces: cgroup v1
// (one line per hierarchy) or v2 (one "0::" line), cgroupfs driver
// (".../kubepods/burstable/pod<uid>/<id>") or systemd driver
// (".../kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope"),
// including the "<slice>:<runtime>:<id>" form containerd uses under
// systemd, and nested under another container's cgroup (kind, Docker in
// Docker). Every line that names a pod must name the same pod and
// container, or the result is an error. It returns an error wrapping
// ErrNotInPod if no line names a pod.
func ParseCgroups(data []byte) (PodContainer, error) {
	var found PodContainer
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		// hierarchy-ID:controller-list:path; the path may itself hold ':'.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return PodContainer{}, fmt.Errorf("attest: cgroup line %d %q: want hierarchy:controllers:path", n, line)
		}
		pc, ok := parseCgroupPath(parts[2])
		if !ok {
			continue
		}
		if found.PodUID == "" {
			found = pc
			continue
		}
		if pc != found {
			return PodContainer{}, fmt.Errorf("attest: cgroups disagree: pod %s container %q and pod %s container %q",
				found.PodUID, found.ContainerID, pc.PodUID, pc.ContainerID)
		}
	}
	if err := sc.Err(); err != nil {
		return PodContainer{}, fmt.Errorf("attest: reading cgroups: %w", err)
	}
	if found.PodUID == "" {
		return PodContainer{}, fmt.Errorf("attest: %w", ErrNotInPod)
	}
	return found, nil
}

// parseCgroupPath extracts the pod and container from one cgroup path. It
// reports false if the path is not below a kubepods cgroup, or if it is
// below a systemd user manager (user@<uid>.service): systemd delegates that
// subtree to the unprivileged user, who could otherwise name a cgroup after
// any pod on the node and move a process into it.
func parseCgroupPath(path string) (PodContainer, bool) {
	segs := strings.Split(path, "/")
	inKubepods := false
	for i, seg := range segs {
		if !inKubepods && strings.HasPrefix(seg, "user@") && strings.HasSuffix(seg, ".service") {
			return PodContainer{}, false
		}
		if seg == "kubepods" || strings.HasPrefix(seg, "kubepods.") || strings.HasPrefix(seg, "kubepods-") {
			inKubepods = true
		}
		if !inKubepods {
			continue
		}
		// containerd with the systemd driver but no systemd scope:
		// "kubepods-burstable-pod<uid>.slice:cri-containerd:<id>".
		podPart, rest, colon := strings.Cut(seg, ":")
		m := podSegment.FindStringSubmatch(podPart)
		if m == nil {
			continue
		}
		pc := PodContainer{PodUID: strings.ReplaceAll(m[1], "_", "-")}
		var next string
		switch {
		case colon:
			_, next, _ = strings.Cut(rest, ":")
		case i+1 < len(segs):
			next = segs[i+1]
		}
		if c := containerSegment.FindStringSubmatch(next); c != nil {
			pc.ContainerID = c[1]
		}
		return pc, true
	}
	return PodContainer{}, false
}

// ReadCgroups reads /proc/<pid>/cgroup under procRoot (normally "/proc")
// and parses it with ParseCgroups.
func ReadCgroups(procRoot string, pid int) (PodContainer, error) {
	f, err := os.Open(procRoot + "/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return PodContainer{}, fmt.Errorf("attest: reading cgroups of process %d: %w", pid, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCgroupFile))
	if err != nil {
		return PodContainer{}, fmt.Errorf("attest: reading cgroups of process %d: %w", pid, err)
	}
	pc, err := ParseCgroups(data)
	if errors.Is(err, ErrNotInPod) {
		return PodContainer{}, fmt.Errorf("attest: process %d: %w", pid, ErrNotInPod)
	}
	return pc, err
}
