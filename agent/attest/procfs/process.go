// Package procfs reads what /proc says about the processes that hold the
// agent's connections: small /proc files read whole (the per-call check's
// hot path), a process's descriptors for a socket and their flags, the
// executable it runs and its effective uid and gid, and which processes on
// the node hold a socket (Scanner, a shared scan of every descriptor
// table). Errors wrap the syscall's errno; a process that is gone reads as
// holding nothing. The binding of agent/attest/peer is built on it.
package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// SocketFDs returns the descriptors through which process pid holds socket
// ino: in its own table, or else in the tables of its threads (a thread may
// have unshared its table, or the leader may have exited).
func SocketFDs(procRoot string, pid int, ino uint64) ([]int, error) {
	var fds []int
	collect := func(fd int, i uint64) {
		if i == ino {
			fds = append(fds, fd)
		}
	}
	dir := procRoot + "/" + strconv.Itoa(pid)
	if err := scanFDs(dir+"/fd", collect); err != nil || len(fds) > 0 {
		return fds, err
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read threads of process %d: %w", pid, err)
	}
	for _, t := range tasks {
		if err := scanFDs(dir+"/task/"+t.Name()+"/fd", collect); err != nil {
			return nil, err
		}
	}
	return fds, nil
}

// FDInfo returns the flags and inode of descriptor fd of process pid.
func FDInfo(procRoot string, pid, fd int) (flags int, ino uint64, err error) {
	data, err := readProc(procRoot + "/" + strconv.Itoa(pid) + "/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch string(k) {
		case "flags":
			f, err := strconv.ParseInt(string(v), 8, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("fdinfo %d/%d flags %q: %w", pid, fd, v, err)
			}
			flags = int(f)
		case "ino":
			if ino, err = strconv.ParseUint(string(v), 10, 64); err != nil {
				return 0, 0, fmt.Errorf("fdinfo %d/%d ino %q: %w", pid, fd, v, err)
			}
		}
	}
	return flags, ino, nil
}

// ExeID returns the device and inode of the executable process pid runs.
func ExeID(procRoot string, pid int) ([2]uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(procRoot+"/"+strconv.Itoa(pid)+"/exe", &st); err != nil {
		return [2]uint64{}, fmt.Errorf("stat executable of process %d: %w", pid, err)
	}
	return [2]uint64{st.Dev, st.Ino}, nil
}

// EffectiveIDs returns the effective uid and gid of process pid.
func EffectiveIDs(procRoot string, pid int) (uid, gid uint32, err error) {
	data, err := readProc(procRoot + "/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("read status of process %d: %w", pid, err)
	}
	field := func(name string) (uint32, error) {
		i := bytes.Index(data, []byte("\n"+name+":"))
		if i < 0 {
			return 0, fmt.Errorf("status of process %d has no %s line", pid, name)
		}
		line, _, _ := bytes.Cut(data[i+len(name)+2:], []byte("\n"))
		f := bytes.Fields(line)
		if len(f) < 2 {
			return 0, fmt.Errorf("status of process %d: malformed %s line", pid, name)
		}
		v, err := strconv.ParseUint(string(f[1]), 10, 32)
		return uint32(v), err
	}
	if uid, err = field("Uid"); err != nil {
		return 0, 0, err
	}
	gid, err = field("Gid")
	return uid, gid, err
}
