package backend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Tests that restart PostgreSQL or pause NATS would break other tests that
// use those servers at the same moment, and `go test ./...` runs packages
// in parallel. A file lock shared by every test process orders them: users
// of the postgres profile hold it shared, fault tests hold it exclusively.
var lockFile = filepath.Join(os.TempDir(), "autoglm-backends.lock")

var held struct {
	sync.Mutex
	f         *os.File
	shared    int
	exclusive bool
}

// Share holds the backends lock shared until release is called. In a
// process that holds it exclusively it is a no-op.
func Share(timeout time.Duration) (release func(), err error) {
	held.Lock()
	defer held.Unlock()
	if held.exclusive {
		return func() {}, nil
	}
	if held.shared == 0 {
		if err := flock(syscall.LOCK_SH, timeout); err != nil {
			return nil, err
		}
	}
	held.shared++
	var once sync.Once
	return func() {
		once.Do(func() {
			held.Lock()
			defer held.Unlock()
			if held.shared--; held.shared == 0 {
				unflock()
			}
		})
	}, nil
}

// Exclusive holds the backends lock exclusively until release is called:
// no other test process uses PostgreSQL or NATS meanwhile. Take it before
// starting the replicas of the test (they would take it shared).
func Exclusive(timeout time.Duration) (release func(), err error) {
	held.Lock()
	defer held.Unlock()
	if held.exclusive || held.shared > 0 {
		return nil, errors.New("backends lock: this process already holds it")
	}
	if err := flock(syscall.LOCK_EX, timeout); err != nil {
		return nil, err
	}
	held.exclusive = true
	var once sync.Once
	return func() {
		once.Do(func() {
			held.Lock()
			defer held.Unlock()
			held.exclusive = false
			unflock()
		})
	}, nil
}

func flock(how int, timeout time.Duration) error {
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			held.f = f
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return fmt.Errorf("backends lock %s: %w", lockFile, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func unflock() {
	if held.f != nil {
		_ = syscall.Flock(int(held.f.Fd()), syscall.LOCK_UN)
		held.f.Close()
		held.f = nil
	}
}
