package procfs

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// readProc reads a small /proc file whole with open, read and close
// syscalls. It is the binding check's hot path (every call and push reads
// the process's fdinfo and status): os.ReadFile's extra fstat, poller
// registration and second read cost two to three times as much. A /proc
// file is generated at read time, so each call sees the current state.
// Errors wrap the syscall's errno (gone() recognises ENOENT and ESRCH).
func readProc(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n := 0
	for {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if m == 0 {
			return buf[:n], nil
		}
		n += m
		if n == len(buf) {
			if len(buf) >= 1<<20 {
				return nil, fmt.Errorf("read %s: larger than 1 MiB", path)
			}
			buf = append(buf, make([]byte, len(buf))...)
		}
	}
}
