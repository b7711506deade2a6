// Package proctest helps tests check that processes a job started are gone.
package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Alive tells a running process from a gone or zombie one (an orphan's
// zombie stays until init reaps it, which a sandbox's init may never do).
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state is the field after "(comm)"; comm may hold anything.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// WaitGone reads the pid a script wrote to pidFile and waits up to within
// for that process to be gone.
func WaitGone(pidFile string, within time.Duration) error {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("the script did not record its child: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("%s: %q is not a pid", pidFile, b)
	}
	deadline := time.Now().Add(within)
	for Alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still runs %s after the job ended", pid, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
