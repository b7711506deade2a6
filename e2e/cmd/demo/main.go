// Command demo runs a sample pipeline through the real gitlab-runner and
// stagehand against the harness (scripts/harness.sh up) and prints the job
// traces. It exits non-zero when a job does not end as expected.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/coordinator"
	"gitlab.com/stagehand/stagehand/e2e/gitserver"
	"gitlab.com/stagehand/stagehand/e2e/harness"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if err := demo(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func demo() error {
	root, err := os.MkdirTemp("", "stagehand-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	h, err := harness.Load(root)
	if err != nil {
		return err
	}
	defer h.Close()
	gs, err := gitserver.New(root + "/git")
	if err != nil {
		return err
	}
	defer gs.Close()
	// The sample project of the tests (werf.yaml: two images, an artifact,
	// a Dockerfile image) with a few files of its own.
	files, err := harness.ReadTree("e2e/testdata/sample")
	if err != nil {
		return fmt.Errorf("run the demo from the repository's root (make demo): %w", err)
	}
	files["README.md"] = "# sample\nA project built by stagehand's demo pipeline.\n"
	files["scripts/hi.sh"] = "echo \"hi from $CI_PROJECT_NAME at $CI_COMMIT_SHORT_SHA\"\n"
	files[".gitlab-ci.yml"] = "# jobs are plain scripts; stagehand does the rest\n"
	repo, err := gs.CreateRepo("stagehand/sample", files)
	if err != nil {
		return err
	}
	kubeconfig, err := os.ReadFile(h.Kubeconfig)
	if err != nil {
		return err
	}
	vars := func() []coordinator.Variable {
		return []coordinator.Variable{{Key: "BASE_IMAGE", Value: h.BaseImage}}
	}
	runner, err := h.NewRunner("demo")
	if err != nil {
		return err
	}
	serviceImage, err := buildServiceImage(h)
	if err != nil {
		return err
	}

	pipeline := []coordinator.Job{
		{
			// Stage build: stagehand builds the images as stages in
			// $CI_REGISTRY_IMAGE/stages and publishes them; a second
			// `make demo` finds every stage in the registry.
			Name: "images", Stage: "build", Repo: &repo, Registry: h.Registry,
			Variables: vars(),
			Script:    []string{"env | grep '^STAGEHAND_IMAGE' | sort"},
			// The build's report: later jobs get its variables.
			Artifacts: []coordinator.Artifact{{Type: "dotenv", Paths: []string{"stagehand.env"}}},
		},
		{
			// A later job reads what the build published, from its
			// dotenv report (GitLab passes it on; the demo does as GitLab).
			Name: "uses-build", Stage: "test", Repo: &repo, Registry: h.Registry,
			Script: []string{`echo "the build published $STAGEHAND_IMAGE_BACKEND ($STAGEHAND_IMAGE_BACKEND_DIGEST)"`, `test -n "$STAGEHAND_IMAGE_BACKEND_DIGEST"`},
		},
		{
			// A test job with a service: busybox's httpd, built by the
			// demo, reached by its alias.
			Name: "test-with-service", Stage: "test", Repo: &repo, Registry: h.Registry, Image: h.BaseImage,
			Services: []coordinator.Service{{Name: serviceImage, Alias: "web"}},
			Script:   []string{"wget -q -O - http://web:8080/"},
		},
		{
			Name: "unit", Stage: "test", Repo: &repo, Registry: h.Registry,
			Script: []string{"sh scripts/hi.sh", "env | grep '^STAGEHAND_' | sort"},
		},
		{
			Name: "test-in-image", Stage: "test", Repo: &repo, Registry: h.Registry, Image: h.BaseImage,
			Script: []string{"cat /etc/stagehand-base-image", "sh scripts/hi.sh", "ls"},
		},
		{
			// An environment: stagehand deploys .helm/ into its namespace
			// and waits for the Deployment (the demo plays the kubelet).
			Name: "review", Stage: "review", Repo: &repo, Registry: h.Registry,
			Environment: &coordinator.Environment{Name: "review/demo", URL: "https://demo.review.example.com"},
			Variables:   append(vars(), coordinator.Variable{Key: "KUBECONFIG", Value: string(kubeconfig), File: true}),
			Script:      []string{`echo "deployed release $STAGEHAND_RELEASE into namespace $STAGEHAND_NAMESPACE"`},
		},
		{
			// Its stop job: release and namespace are removed.
			Name: "stop review", Stage: "review", Repo: &repo, Registry: h.Registry,
			Environment: &coordinator.Environment{Name: "review/demo", Action: "stop"},
			Variables:   append(vars(), coordinator.Variable{Key: "KUBECONFIG", Value: string(kubeconfig), File: true}),
			Script:      []string{`echo "environment $STAGEHAND_ENV stopped"`},
		},
	}
	// The cluster has no nodes: mark the review's pods running and ready.
	rc, err := clientcmd.BuildConfigFromFlags("", h.Kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	kctx, stopKubelet := context.WithCancel(context.Background())
	defer stopKubelet()
	go harness.PlayKubelet(kctx, kube, "sample-review-demo", "backend", harness.PodReady, nil)
	runner.Env = append(runner.Env, "STAGEHAND_DOCKER_NETWORK=none")
	failed := 0
	var reported []coordinator.Variable
	for _, job := range pipeline {
		job.Variables = append(job.Variables, reported...)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		run, err := runner.Run(ctx, job, nil)
		cancel()
		if err != nil {
			return err
		}
		vars, err := coordinator.DotenvVariables(h.Coordinator.Artifacts(run.ID))
		if err != nil {
			return err
		}
		reported = append(reported, vars...)
		fmt.Printf("\n===== job %d %q (%s): %s in %s =====\n", run.ID, job.Name, job.Stage, run.Result.State, run.Duration.Round(time.Millisecond))
		fmt.Print(harness.Readable(run.Result.Trace))
		if run.Result.State != "success" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d job(s) failed", failed)
	}
	fmt.Printf("\n===== pipeline passed: %d jobs =====\n", len(pipeline))
	return nil
}

// buildServiceImage builds the demo's service image into the local
// registry: busybox's httpd serving a page on port 8080.
func buildServiceImage(h *harness.Harness) (string, error) {
	dir, err := os.MkdirTemp("", "stagehand-demo-service-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	dockerfile := "FROM " + h.BaseImage + "\n" +
		"RUN mkdir -p /www && echo 'hello from the web service' > /www/index.html\n" +
		"EXPOSE 8080\n" +
		`CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]` + "\n"
	if err := os.WriteFile(dir+"/Dockerfile", []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	img := h.Registry + "/stagehand/demo-web:latest"
	for _, args := range [][]string{{"build", "-q", "-t", img, dir}, {"push", "-q", img}} {
		cmd := exec.Command("docker", append([]string{"-H", h.DockerHost}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("docker %s: %v\n%s", args[0], err, out)
		}
	}
	return img, nil
}
