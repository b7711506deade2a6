package executor

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/internal/proctest"
)

func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(p, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostShellExitStatusAndEnv(t *testing.T) {
	var out bytes.Buffer
	h := hostShell{baseEnv: []string{"PATH=" + os.Getenv("PATH"), "FROM_HOST=h"}, stopTimeout: time.Second}
	code, err := h.Run(context.Background(), Script{
		Path: writeScript(t, "echo \"$FROM_HOST $FROM_JOB\"; exit 7\n"), Stage: "build_script",
		Env: []string{"FROM_JOB=j"}, Stdout: &out, Stderr: &out,
	})
	if err != nil || code != 7 {
		t.Fatalf("code %d err %v", code, err)
	}
	if strings.TrimSpace(out.String()) != "h j" {
		t.Errorf("output %q", out.String())
	}
}

// A stopped job takes the whole process group down: bash and what it
// started in the background.
func TestHostShellStopKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	h := hostShell{baseEnv: []string{"PATH=" + os.Getenv("PATH")}, stopTimeout: 2 * time.Second}
	go func() {
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(pidFile); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	// trap '' TERM: bash ignores SIGTERM, so only the SIGKILL after the
	// stop timeout ends it.
	_, err := h.Run(ctx, Script{
		Path:  writeScript(t, "trap '' TERM\nsleep 300 & echo $! > "+pidFile+"\nwait\nwait\n"),
		Stage: "build_script", Stdout: &out, Stderr: &out,
	})
	if err == nil {
		t.Fatal("stopped script reported no error")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stop took %s", d)
	}
	if err := proctest.WaitGone(pidFile, 2*time.Second); err != nil {
		t.Error(err)
	}
}
