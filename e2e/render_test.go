package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"gitlab.com/stagehand/stagehand/e2e/harness"
	"gitlab.com/stagehand/stagehand/secret"
)

// renderChart is a werf 1.1 style chart: an image through
// werf_container_image/env, a secret value, and a ConfigMap that does not
// depend on the image.
var renderChart = map[string]string{
	".helm/Chart.yaml": "apiVersion: v2\nname: rnd\nversion: 0.1.0\n",
	".helm/templates/app.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: rnd
spec:
  selector:
    matchLabels: {app: rnd}
  template:
    metadata:
      labels: {app: rnd}
    spec:
      containers:
      - name: app
{{ tuple "app" . | werf_container_image | indent 8 }}
        env:
{{ tuple "app" . | werf_container_env | indent 8 }}
        - name: MODE
          value: {{ .Values.mode | quote }}
---
apiVersion: v1
kind: Secret
metadata:
  name: rnd
data:
  token: {{ .Values.token | b64enc }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: rnd
data:
  project: {{ .Values.global.werf.name | quote }}
`,
	".helm/values.yaml": "mode: production\n",
}

// TestShellRenderEqualsWhatTheDeployApplied: from a shell, `stagehand
// deploy` deploys a werf chart and `stagehand render` prints the same
// objects; a second deploy after a rebuild changes the Deployment only.
func TestShellRenderEqualsWhatTheDeployApplied(t *testing.T) {
	const keyText = "5ec7e75ec7e75ec7e75ec7e75ec7e75e"
	key, err := secret.ParseKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	values, err := key.EncryptValues([]byte("token: render-token-4d2b\n"))
	if err != nil {
		t.Fatal(err)
	}
	rememberSecrets("render-token-4d2b")
	files := map[string]string{
		"werf.yaml":                "project: rnd\nconfigVersion: 1\n---\nimage: app\nfrom: " + h.BaseImage + "\ngit:\n- add: /src\n  to: /src\n",
		"src/version":              "1\n",
		".helm/secret-values.yaml": string(values),
	}
	for k, v := range renderChart {
		files[k] = v
	}
	dir := checkout(t, files)
	repo := h.Registry + "/" + fmt.Sprintf("stagehand/rnd-%d", time.Now().UnixNano())
	env := []string{"DOCKER_CONFIG=" + t.TempDir(), "WERF_SECRET_KEY=" + keyText, "CI_COMMIT_TAG=", "CI_COMMIT_BRANCH=main", "CI_COMMIT_REF_NAME=main"}
	envName := fmt.Sprintf("review-%d", time.Now().UnixNano()%100000)
	ns := "rnd-" + envName
	common := []string{"--dir", dir, "--repo", repo, "--env", envName, "--tag-strategy", "tag-or-branch",
		"--docker-host", h.Engines[0].Host, "--docker-network", "none", "--synchronization", "none", "--kubeconfig", h.Kubeconfig}

	c := kubeClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	go harness.PlayKubelet(ctx, c, ns, "rnd", harness.PodReady, nil)
	defer stagehandCLI(t, nil, "dismiss", "--namespace", ns, "--kubeconfig", h.Kubeconfig)

	_, trace := mustCLI(t, env, append([]string{"deploy", "--deploy-timeout", "1m"}, common...)...)
	if !strings.Contains(trace, "is ready in namespace "+ns) || strings.Contains(trace, "render-token-4d2b") {
		t.Fatalf("deploy trace:\n%s", trace)
	}
	manifest, _ := mustCLI(t, env, append([]string{"render"}, common...)...)

	// Each rendered object is in the cluster as rendered.
	objects := 0
	for _, doc := range strings.Split(manifest, "\n---") {
		var obj struct {
			Kind     string
			Metadata struct{ Name string }
			Data     map[string]string
			Spec     struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Name, Image, ImagePullPolicy string
							Env                          []struct{ Name, Value string }
						}
					}
				}
			}
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil || obj.Kind == "" {
			continue
		}
		objects++
		switch obj.Kind {
		case "Deployment":
			d, err := c.AppsV1().Deployments(ns).Get(ctx, obj.Metadata.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			live := d.Spec.Template.Spec.Containers
			r := obj.Spec.Template.Spec.Containers
			if len(live) != len(r) || live[0].Image != r[0].Image || string(live[0].ImagePullPolicy) != r[0].ImagePullPolicy || len(live[0].Env) != len(r[0].Env) {
				t.Errorf("deployment %s: rendered %+v, live %+v", obj.Metadata.Name, r, live)
			}
			if !strings.HasPrefix(r[0].Image, repo+"/app:main") || r[0].ImagePullPolicy != "Always" || r[0].Env[0].Name != "DOCKER_IMAGE_ID" {
				t.Errorf("rendered container %+v: want werf's image, pull policy and DOCKER_IMAGE_ID", r[0])
			}
		case "Secret":
			s, err := c.CoreV1().Secrets(ns).Get(ctx, obj.Metadata.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range obj.Data {
				b, _ := base64.StdEncoding.DecodeString(v)
				if string(s.Data[k]) != string(b) {
					t.Errorf("secret %s key %s differs from the render", obj.Metadata.Name, k)
				}
			}
		case "ConfigMap":
			m, err := c.CoreV1().ConfigMaps(ns).Get(ctx, obj.Metadata.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.Data, obj.Data) {
				t.Errorf("configmap %s: rendered %v, live %v", obj.Metadata.Name, obj.Data, m.Data)
			}
		}
	}
	if objects != 3 {
		t.Fatalf("rendered %d objects, want 3:\n%s", objects, manifest)
	}

	// A rebuild changes the image: the second deploy changes the
	// Deployment, and leaves the ConfigMap and Secret as they were.
	versions := func() (string, string, string) {
		d, _ := c.AppsV1().Deployments(ns).Get(ctx, "rnd", metav1.GetOptions{})
		m, _ := c.CoreV1().ConfigMaps(ns).Get(ctx, "rnd", metav1.GetOptions{})
		s, _ := c.CoreV1().Secrets(ns).Get(ctx, "rnd", metav1.GetOptions{})
		return d.ResourceVersion, m.ResourceVersion, s.ResourceVersion
	}
	d1, m1, s1 := versions()
	for _, args := range [][]string{{"add", "."}, {"-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-am", "v2"}} {
		if err := os.WriteFile(dir+"/src/version", []byte("2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	mustCLI(t, env, append([]string{"deploy", "--deploy-timeout", "1m"}, common...)...)
	d2, m2, s2 := versions()
	if d2 == d1 || m2 != m1 || s2 != s1 {
		t.Errorf("after a rebuild: deployment %s→%s, configmap %s→%s, secret %s→%s; want only the deployment changed", d1, d2, m1, m2, s1, s2)
	}
}
