package cleanup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/harness"
	"gitlab.com/stagehand/stagehand/request"
)

func dockerCmd(t *testing.T, host string, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", append([]string{"-H", host}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %v: %v\n%s", args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// TestCleanBuilder: on a real engine, local stages the storage lost go,
// then the oldest until the stage images fit the budget, and the image a
// running container uses stays.
func TestCleanBuilder(t *testing.T) {
	env, _, err := harness.Env()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	engines := harness.Engines(env)
	host := engines[len(engines)-1].Host
	repo := fmt.Sprintf("127.0.0.1:5000/stagehand-test/builder-%d/stages", time.Now().UnixNano())
	base := env["STAGEHAND_TEST_BASE_IMAGE"]
	var tags []string
	for i := 0; i < 5; i++ {
		tag := fmt.Sprintf("%056x-%d", i, 1000+i) // older first
		tags = append(tags, tag)
		df := fmt.Sprintf("FROM %s\nRUN head -c 3000000 /dev/urandom > /blob-%d\n", base, i)
		dockerCmd(t, host, df, "build", "-q", "--network", "none", "-t", repo+":"+tag, "-")
	}
	// Stage 0 (the oldest) runs; stage 4 is no longer in the storage.
	ctr := dockerCmd(t, host, "", "run", "-d", "--network", "none", repo+":"+tags[0], "sleep", "300")
	defer exec.Command("docker", "-H", host, "rm", "-f", ctr).Run()
	remaining := map[string]bool{tags[0]: true, tags[1]: true, tags[2]: true, tags[3]: true}

	// Budget: two stage images (each ~5 MB with its base) and a bit.
	var trace bytes.Buffer
	rep, err := CleanBuilder(context.Background(), host, request.BuilderLimits{MaxBytes: 11_000_000}, repo, remaining, &trace)
	t.Log(trace.String())
	if err != nil {
		t.Fatal(err)
	}
	left := map[string]bool{}
	for _, l := range strings.Fields(dockerCmd(t, host, "", "images", "--format", "{{.Tag}}", repo)) {
		left[l] = true
	}
	if left[tags[4]] {
		t.Error("the stage the storage lost is still on the host")
	}
	if !left[tags[0]] {
		t.Error("the image of a running container was removed")
	}
	if left[tags[1]] || left[tags[2]] {
		t.Error("the oldest stages not in use were kept above the budget")
	}
	if rep.After > 11_000_000 {
		t.Errorf("usage after cleanup %d bytes, above the 11 MB budget", rep.After)
	}
	if !left[tags[3]] {
		t.Error("the newest stage was removed although the budget was met before it")
	}
	t.Logf("removed %d, usage %d → %d bytes", len(rep.Removed), rep.Before, rep.After)
}
