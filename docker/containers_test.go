package docker_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/docker"
	"gitlab.com/stagehand/stagehand/e2e/harness"
)

// testEngine is the harness's first Docker Engine and its base image;
// outside CI a test without them skips, in CI it fails.
func testEngine(t *testing.T) (*docker.Engine, string) {
	t.Helper()
	env, path, err := harness.Env()
	if err == nil && env["STAGEHAND_TEST_BASE_IMAGE"] == "" {
		err = fmt.Errorf("%s names no base image", path)
	}
	var engines []harness.Engine
	if err == nil {
		if engines = harness.Engines(env); len(engines) == 0 {
			err = fmt.Errorf("%s names no engine", path)
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the harness is required in CI: %v", err)
		}
		t.Skipf("harness not started: %v", err)
	}
	e, err := docker.Connect(context.Background(), engines[0].Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, env["STAGEHAND_TEST_BASE_IMAGE"]
}

// TestCreateReplacesALeftoverOfTheSameName: a container left by an
// earlier attempt under the name asked for is removed, and the new one
// created under that name.
func TestCreateReplacesALeftoverOfTheSameName(t *testing.T) {
	e, base := testEngine(t)
	ctx := context.Background()
	if _, ok, err := e.Inspect(ctx, base); err != nil {
		t.Fatal(err)
	} else if !ok {
		if err := e.Pull(ctx, base, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	spec := docker.ContainerSpec{Name: fmt.Sprintf("stagehand-test-leftover-%d", time.Now().UnixNano()), Image: base, Entrypoint: []string{"true"}}
	left, err := e.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer left.Remove(ctx)
	again, err := e.Create(ctx, spec)
	if err != nil {
		t.Fatalf("create %s again: %v", spec.Name, err)
	}
	defer again.Remove(ctx)
	if again.ID == left.ID {
		t.Fatalf("the same container answered: %s", again.ID)
	}
	if id, err := again.Commit(ctx, docker.ImageConfig{}); err != nil {
		t.Errorf("the new container is not usable: %v", err)
	} else {
		defer e.Remove(ctx, id)
	}
	if _, err := left.Commit(ctx, docker.ImageConfig{}); err == nil || !docker.IsNotFound(err) {
		t.Errorf("the leftover container is still there (commit: %v)", err)
	}
}
