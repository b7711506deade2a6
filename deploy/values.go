// Package deploy installs a project's Helm chart into the namespace of a
// GitLab environment, follows the release's workloads until they are
// ready, and dismisses environments. Only stagehand-worker links it.
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/strvals"
	yaml "sigs.k8s.io/yaml"

	"gitlab.com/stagehand/stagehand/request"
)

// pinned is the reference that pins an image: repository:tag@digest.
func pinned(i request.Image) string {
	ref := i.Reference()
	if i.Digest != "" {
		ref += "@" + i.Digest
	}
	return ref
}

// ImageKey is an image's key under global.stagehand.image: its name, or
// "default" for the unnamed image.
func ImageKey(name string) string {
	if name == "" {
		return "default"
	}
	return name
}

// ValuesInput is everything the release's values come from.
type ValuesInput struct {
	Env       string // STAGEHAND_ENV
	CIURL     string // CI_ENVIRONMENT_URL
	Namespace string
	Images    []request.Image
	// Files are extra values files (.helm/values-<env>.yaml), in order.
	Files [][]byte
	// Secret is the chart's secret-values.yaml, decrypted.
	Secret []byte
	// Werf fills .Values.global.werf as werf 1.1 did; nil leaves it out.
	Werf *WerfInput
	// Sets are the STAGEHAND_SET_* job variables.
	Sets map[string]string
}

// Values computes the release's values, each over the one before (and
// all over the chart's values.yaml), in werf 1.1's order: the extra
// files, the secret values, stagehand's and werf's globals, then the
// --set lines (sorted by variable name).
func Values(in ValuesInput) (map[string]any, error) {
	vals := map[string]any{}
	for i, f := range in.Files {
		var m map[string]any
		if err := yaml.Unmarshal(f, &m); err != nil {
			return nil, fmt.Errorf("values file %d: %w", i+1, err)
		}
		vals = chartutil.CoalesceTables(m, vals)
	}
	if in.Secret != nil {
		var m map[string]any
		if err := yaml.Unmarshal(in.Secret, &m); err != nil {
			// The decrypted text is not quoted: it holds the secrets.
			return nil, fmt.Errorf("%s: not a YAML map once decrypted", SecretValuesFile)
		}
		vals = chartutil.CoalesceTables(m, vals)
	}
	images := map[string]any{}
	for _, img := range in.Images {
		images[ImageKey(img.Name)] = map[string]any{
			"repository": img.Repository,
			"tag":        img.Tag,
			"digest":     img.Digest,
			"reference":  pinned(img),
		}
	}
	ciURL := ""
	if in.CIURL != "" {
		u, err := url.Parse(in.CIURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("CI_ENVIRONMENT_URL=%q is not a URL with a host", in.CIURL)
		}
		ciURL = u.Host
	}
	global := map[string]any{
		"env":       in.Env,
		"ci_url":    ciURL,
		"namespace": in.Namespace,
		"stagehand": map[string]any{"image": images},
	}
	if in.Werf != nil {
		global["werf"] = werfValues(*in.Werf, in.Images)
	}
	globals := map[string]any{"global": global}
	vals = chartutil.CoalesceTables(globals, vals)
	names := make([]string, 0, len(in.Sets))
	for n := range in.Sets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := strvals.ParseInto(in.Sets[n], vals); err != nil {
			return nil, fmt.Errorf("variable %s=%q is not a --set line (path.to.key=value): %w", n, in.Sets[n], err)
		}
	}
	return vals, nil
}

// EnvValuesFile reads <chart>/values-<env>.yaml; nil when absent.
func EnvValuesFile(chartDir, env string) ([]byte, error) {
	if env == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(chartDir, "values-"+env+".yaml"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// annotator is Helm's post-renderer that puts stagehand's annotations on
// every object of the release.
type annotator struct{ annotations map[string]string }

// Run implements postrender.PostRenderer.
func (a annotator) Run(in *bytes.Buffer) (*bytes.Buffer, error) {
	out, err := Annotate(in.Bytes(), a.annotations)
	return bytes.NewBuffer(out), err
}

// Annotate adds annotations to the metadata of every object of a
// multi-document manifest; an object's own annotation of the same key
// gives way.
func Annotate(manifests []byte, annotations map[string]string) ([]byte, error) {
	var out bytes.Buffer
	dec := newDocReader(manifests)
	for {
		doc, err := dec.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if strings.TrimSpace(string(doc)) == "" {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("rendered manifest: %w", err)
		}
		if obj == nil {
			continue
		}
		meta, _ := obj["metadata"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
			obj["metadata"] = meta
		}
		ann, _ := meta["annotations"].(map[string]any)
		if ann == nil {
			ann = map[string]any{}
		}
		for k, v := range annotations {
			ann[k] = v
		}
		meta["annotations"] = ann
		b, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes(), nil
}

// docReader splits a YAML stream at "---" lines.
type docReader struct {
	lines []string
	i     int
}

func newDocReader(b []byte) *docReader { return &docReader{lines: strings.Split(string(b), "\n")} }

func (d *docReader) next() ([]byte, error) {
	if d.i >= len(d.lines) {
		return nil, io.EOF
	}
	var doc []string
	for d.i < len(d.lines) {
		l := d.lines[d.i]
		d.i++
		if strings.HasPrefix(l, "---") {
			if len(doc) > 0 {
				break
			}
			continue
		}
		doc = append(doc, l)
	}
	return []byte(strings.Join(doc, "\n")), nil
}
