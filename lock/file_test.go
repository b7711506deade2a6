package lock

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFileLocker(t *testing.T) {
	dir := t.TempDir()
	a, err := New(":local", Config{LocalDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(":local", Config{LocalDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Describe(); !strings.Contains(d, dir) {
		t.Errorf("Describe() = %q, want it to name %s", d, dir)
	}
	behaviour(t, a, b, pollFile)

	// The names' '/' and ':' made no directories, and every holder file
	// went with its lease.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() && e.Name() != "holders" {
			t.Errorf("a lock name made the directory %s", e.Name())
		}
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "holders")); len(left) != 0 {
		t.Errorf("holder files left after every release: %v", left)
	}
}

// A busy file lock is tried four times a second; lockgate kept every
// handle of a failed try until this package released them.
func TestFileLockerWaitKeepsNoHandles(t *testing.T) {
	dir := t.TempDir()
	l, err := newFileLocker(dir)
	if err != nil {
		t.Fatal(err)
	}
	held, err := l.Acquire(context.Background(), testName, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	if _, err := l.Acquire(ctx, testName, Options{}); err == nil {
		t.Fatal("got a held lock")
	}
	// lockgate's FileLocker keeps its handles in an unexported map.
	if n := reflect.ValueOf(l.locker).Elem().FieldByName("locks").Len(); n != 1 {
		t.Errorf("lockgate keeps %d handles after a 1.2 s wait; want 1 (the held lock)", n)
	}
}

// helperEnv makes the test binary a lock holder in another process.
const helperEnv = "STAGEHAND_LOCK_TEST_HELPER"

// TestHelperProcess is the other process of TestFileLockAcrossProcesses:
// it takes the lock, says "held", and releases when its stdin closes.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("only a helper of TestFileLockAcrossProcesses")
	}
	parts := strings.SplitN(spec, "|", 4)
	shared, _ := strconv.ParseBool(parts[2])
	l, err := New(":local", Config{LocalDir: parts[0]})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	lease, err := l.Acquire(context.Background(), parts[1], Options{Shared: shared, Holder: parts[3]})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("held")
	io.Copy(io.Discard, os.Stdin)
	if err := lease.Release(); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// holdInProcess starts another process holding the lock.
func holdInProcess(t *testing.T, dir, name string, shared bool, holder string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%t|%s", helperEnv, dir, name, shared, holder))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "held" {
		t.Fatalf("the other process did not take the lock: %q", line)
	}
	return cmd, stdin
}

func TestFileLockAcrossProcesses(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip()
	}
	dir := t.TempDir()
	l, err := New(":local", Config{LocalDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	fl := l.(*fileLocker)
	ctx := context.Background()

	t.Run("a holder that dies frees the lock and its description", func(t *testing.T) {
		other, _ := holdInProcess(t, dir, testName, false, "process B, job 2")
		got, waitedFor := acquireAsync(t, ctx, l, testName, Options{Holder: "process A, job 1"})
		mustWait(t, got, time.Second, "exclusive while another process holds it")
		if h, _ := waitedFor.Load().(string); h != "process B, job 2" {
			t.Errorf("the waiter was told the holder is %q", h)
		}
		other.Process.Signal(syscall.SIGKILL)
		mine := mustGet(t, got, 2*time.Second, "the lock of a killed holder")
		if h := fl.holdersOf(testName); h != "process A, job 1" {
			t.Errorf("holders after the other process died: %q, want only this one", h)
		}
		if files, _ := filepath.Glob(filepath.Join(dir, "holders", "*")); len(files) != 1 {
			t.Errorf("holder files: %v, want the dead holder's removed", files)
		}
		release(t, mine)
	})

	t.Run("shared with another process, exclusive after it let go", func(t *testing.T) {
		other, stdin := holdInProcess(t, dir, testName, true, "process C, job 3")
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		s, err := l.Acquire(sctx, testName, Options{Shared: true, Holder: "process A, job 4"})
		if err != nil {
			t.Fatalf("shared next to another process's shared lock: %v", err)
		}
		b, _ := New(":local", Config{LocalDir: dir})
		got, waitedFor := acquireAsync(t, ctx, b, testName, Options{})
		release(t, s)
		mustWait(t, got, time.Second, "exclusive while another process holds it shared")
		if h, _ := waitedFor.Load().(string); h != "process A, job 4; process C, job 3" && h != "process C, job 3" {
			t.Errorf("the waiter was told the holders are %q", h)
		}
		stdin.Close()
		if err := other.Wait(); err != nil {
			t.Fatalf("the other process: %v", err)
		}
		release(t, mustGet(t, got, 2*time.Second, "exclusive after the other process released"))
	})
}
