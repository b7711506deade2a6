package deploy

import (
	"reflect"
	"strings"
	"testing"

	yaml "sigs.k8s.io/yaml"

	"gitlab.com/stagehand/stagehand/request"
)

func TestValues(t *testing.T) {
	in := ValuesInput{
		Env: "review-x", CIURL: "https://x.review.example.com/path", Namespace: "shop-review-x",
		Images: []request.Image{{Name: "backend", Repository: "reg/shop/backend", Tag: "abc", Digest: "sha256:1"}, {Repository: "reg/shop", Tag: "t"}},
		Files:  [][]byte{[]byte("replicas: 2\nglobal:\n  env: overridden\n  extra: kept\n")},
		Sets:   map[string]string{"STAGEHAND_SET_B": "replicas=3", "STAGEHAND_SET_A": "ingress.host=x.example.com,replicas=5"},
	}
	got, err := Values(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"replicas": int64(3), // sets apply in name order: A then B
		"ingress":  map[string]any{"host": "x.example.com"},
		"global": map[string]any{
			"env": "review-x", "ci_url": "x.review.example.com", "namespace": "shop-review-x", "extra": "kept",
			"stagehand": map[string]any{"image": map[string]any{
				"backend": map[string]any{"repository": "reg/shop/backend", "tag": "abc", "digest": "sha256:1", "reference": "reg/shop/backend:abc@sha256:1"},
				"default": map[string]any{"repository": "reg/shop", "tag": "t", "digest": "", "reference": "reg/shop:t"},
			}},
		},
	}
	if !reflect.DeepEqual(normalize(got), normalize(want)) {
		t.Errorf("Values =\n%v\nwant\n%v", got, want)
	}
	for _, bad := range []ValuesInput{
		{CIURL: "not a url"},
		{Sets: map[string]string{"STAGEHAND_SET_X": "novalue"}},
		{Files: [][]byte{[]byte("a: [")}},
	} {
		if _, err := Values(bad); err == nil {
			t.Errorf("Values(%+v) gave no error", bad)
		}
	}
	if got := request.SetsFrom(map[string]string{"STAGEHAND_SET_X": "a=1", "OTHER": "b=2"}); len(got) != 1 {
		t.Errorf("SetsFrom = %v", got)
	}
}

// normalize makes numbers comparable after YAML and --set parsing.
func normalize(m map[string]any) map[string]any {
	b, _ := yaml.Marshal(m)
	var out map[string]any
	_ = yaml.Unmarshal(b, &out)
	return out
}

func TestAnnotateEveryObject(t *testing.T) {
	in := `---
# Source: app/templates/deploy.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    keep: "yes"
---
apiVersion: v1
kind: Service
metadata:
  name: web
---
`
	out, err := Annotate([]byte(in), map[string]string{"ci.stagehand.io/commit": "abc", "keep": "ours"})
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(strings.TrimPrefix(string(out), "---\n"), "---\n")
	if len(docs) != 2 {
		t.Fatalf("%d documents out:\n%s", len(docs), out)
	}
	for _, d := range docs {
		var obj struct {
			Metadata struct{ Annotations map[string]string }
		}
		if err := yaml.Unmarshal([]byte(d), &obj); err != nil {
			t.Fatal(err)
		}
		if obj.Metadata.Annotations["ci.stagehand.io/commit"] != "abc" || obj.Metadata.Annotations["keep"] != "ours" {
			t.Errorf("annotations = %v", obj.Metadata.Annotations)
		}
	}
}

func TestWorkloads(t *testing.T) {
	manifest := `---
kind: Deployment
metadata: {name: web}
---
kind: Job
metadata: {name: migrate, annotations: {stagehand.io/fail-mode: ignore}}
---
kind: DaemonSet
metadata: {name: agent, annotations: {stagehand.io/track: "false"}}
---
kind: Service
metadata: {name: web}
---
kind: StatefulSet
metadata: {name: db}
`
	got, _, err := Workloads(manifest)
	if err != nil {
		t.Fatal(err)
	}
	want := []Workload{{Kind: "Deployment", Name: "web"}, {Kind: "Job", Name: "migrate", Optional: true}, {Kind: "StatefulSet", Name: "db"}}
	if !reflect.DeepEqual(withoutLogs(got), want) {
		t.Errorf("Workloads = %v, want %v", got, want)
	}
}

func TestEnvironmentURL(t *testing.T) {
	for _, c := range []struct{ manifest, want string }{
		{"---\nkind: Service\nmetadata: {name: a}\n", ""},
		{"---\nkind: Ingress\nspec:\n  rules:\n  - host: shop.example.com\n", "http://shop.example.com"},
		{"---\nkind: Deployment\n---\nkind: Ingress\nspec:\n  tls:\n  - hosts: [shop.example.com]\n  rules:\n  - host: '*.example.com'\n  - host: shop.example.com\n", "https://shop.example.com"},
	} {
		if got := EnvironmentURL(c.manifest); got != c.want {
			t.Errorf("%q: %q, want %q", c.manifest, got, c.want)
		}
	}
}
