package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestHooksBinaryStaysLight: gitlab-runner starts the hooks binary for
// every stage of every job, so it must not link the heavy libraries; they
// belong to stagehand-worker, and the template engine of werf.yaml (sprig)
// to stagehand-config.
func TestHooksBinaryStaysLight(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	heavy := []string{"github.com/moby/", "helm.sh/", "k8s.io/client-go", "github.com/google/go-containerregistry", "github.com/werf/lockgate", "github.com/Masterminds/sprig"}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, h := range heavy {
			if strings.HasPrefix(d, h) {
				t.Errorf("the hooks binary links %s", d)
			}
		}
	}
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages: %q", len(deps), out)
	}
}

// TestWorkerDoesNotLinkHelm: builds, cleanups and job containers start
// stagehand-worker; Helm (some 70 ms a start) is stagehand-deploy's.
func TestWorkerDoesNotLinkHelm(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./cmd/stagehand-worker").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, "helm.sh/") || d == "gitlab.com/stagehand/stagehand/deploy" {
			t.Errorf("stagehand-worker links %s", d)
		}
	}
}
