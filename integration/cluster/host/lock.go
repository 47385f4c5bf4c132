package host

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Lock takes the host-wide lock that lets one cluster run at a time,
// waiting at most timeout; the returned function releases it.
func Lock(timeout time.Duration) (func(), error) {
	f, err := os.OpenFile("/run/castellan-cluster.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("locking /run/castellan-cluster.lock (another cluster test runs?): %w", err)
		}
		time.Sleep(time.Second)
	}
}
