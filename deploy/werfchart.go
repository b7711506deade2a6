package deploy

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"helm.sh/helm/v3/pkg/chart"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

// werfHelpersFile is the template file stagehand adds to a chart for
// werf 1.1's chart API (werf 1.1 in Helm 3 mode added its helpers as
// templates/_werf_helpers.tpl).
const werfHelpersFile = "templates/_werf_helpers.tpl"

// werfHelpers defines werf 1.1's chart functions as named templates, with
// werf's output: werf_container_image gives "image: REF" and, when the
// image is a branch's (its tag moves), "imagePullPolicy: Always" on the
// next line (else a newline); werf_container_env gives the DOCKER_IMAGE_ID
// variable for a branch's image, so that pods restart when the image
// behind the tag changes, else nothing. Each takes the root context (the
// nameless image), tuple . (the same), or tuple "name" . (a named image),
// and fails with werf's messages when the form does not fit the images.
// image and image_id answer the bare reference and ID.
const werfHelpers = `{{- /* werf 1.1's chart API, added by stagehand. */ -}}
{{- define "_stagehand_werf_image_field" -}}
{{-   $field := index . 0 -}}
{{-   $args := index . 1 -}}
{{-   $name := "" -}}
{{-   $ctx := $args -}}
{{-   if kindIs "slice" $args -}}
{{-     if ge (len $args) 2 -}}
{{-       $name = index $args 0 -}}
{{-       $ctx = index $args 1 -}}
{{-     else -}}
{{-       $ctx = index $args 0 -}}
{{-     end -}}
{{-   end -}}
{{-   $werf := $ctx.Values.global.werf -}}
{{-   if eq $name "" -}}
{{-     if not $werf.is_nameless_image -}}
{{-       required "No image specified for template" nil -}}
{{-     end -}}
{{-     index $werf.image $field -}}
{{-   else -}}
{{-     if $werf.is_nameless_image -}}
{{-       required (printf "No image should be specified for template, got '%s'" $name) nil -}}
{{-     end -}}
{{-     index (required (printf "Unknown image '%s' specified for template" $name) (pluck $name $werf.image | first)) $field -}}
{{-   end -}}
{{- end -}}

{{- define "_stagehand_werf_moving_tag" -}}
{{-   $ctx := . -}}
{{-   if kindIs "slice" . -}}
{{-     $ctx = last . -}}
{{-   end -}}
{{-   if or $ctx.Values.global.werf.ci.is_branch $ctx.Values.global.werf.ci.is_custom -}}
true
{{-   end -}}
{{- end -}}

{{- define "image" -}}
{{-   tuple "docker_image" . | include "_stagehand_werf_image_field" -}}
{{- end -}}

{{- define "image_id" -}}
{{-   tuple "docker_image_id" . | include "_stagehand_werf_image_field" -}}
{{- end -}}

{{- define "werf_container_image" -}}
image: {{ tuple "docker_image" . | include "_stagehand_werf_image_field" }}
{{-   if include "_stagehand_werf_moving_tag" . }}
imagePullPolicy: Always
{{-   else }}
{{ end -}}
{{- end -}}

{{- define "werf_container_env" -}}
{{-   if include "_stagehand_werf_moving_tag" . -}}
- name: DOCKER_IMAGE_ID
  value: {{ tuple "docker_image_id" . | include "_stagehand_werf_image_field" }}
{{-   end -}}
{{- end -}}
`

// definesRe finds the names a template file defines.
var definesRe = regexp.MustCompile(`\{\{-?\s*(?:define|block)\s+"([^"]+)"`)

// withWerfAPI gives a chart (and its subcharts) werf 1.1's chart API:
// calls of werf's functions become includes of its helpers, which are
// added unless the chart defines templates of those names itself (a chart
// written for werf in Helm 3 mode may carry werf's own helpers), and
// werf_secret_file answers the chart's decrypted secret files. A chart
// that uses none of it renders as before.
func withWerfAPI(ch *chart.Chart, secretFiles map[string]string) {
	defined := map[string]bool{}
	var walk func(c *chart.Chart)
	walk = func(c *chart.Chart) {
		for _, t := range c.Templates {
			t.Data = []byte(rewriteWerfCalls(string(t.Data)))
			for _, m := range definesRe.FindAllStringSubmatch(string(t.Data), -1) {
				defined[m[1]] = true
			}
		}
		for _, d := range c.Dependencies() {
			walk(d)
		}
	}
	walk(ch)
	helpers := werfHelpers
	for _, name := range []string{"image", "image_id"} {
		if defined[name] {
			// The chart's own template of that name stays its own.
			helpers = removeDefine(helpers, name)
		}
	}
	if !defined["werf_container_image"] && !defined["werf_container_env"] {
		ch.Templates = append(ch.Templates, &chart.File{Name: werfHelpersFile, Data: []byte(helpers)})
	}
	if !defined["werf_secret_file"] {
		ch.Templates = append(ch.Templates, &chart.File{Name: werfSecretsFile, Data: []byte(secretFileTemplate(secretFiles))})
	}
}

// removeDefine drops one define … end block of the helpers.
func removeDefine(helpers, name string) string {
	start := strings.Index(helpers, `{{- define "`+name+`" -}}`)
	if start < 0 {
		return helpers
	}
	end := strings.Index(helpers[start:], "{{- end -}}\n")
	return helpers[:start] + helpers[start+end+len("{{- end -}}\n"):]
}

// werfSecretsFile holds werf_secret_file.
const werfSecretsFile = "templates/_werf_secret_file.tpl"

// secretFileTemplate defines werf_secret_file over the decrypted files of
// .helm/secret/, by their paths below it: `tuple "path" . | include
// "werf_secret_file"`, `include "werf_secret_file" "path"`, and werf's
// function form `werf_secret_file "path"` (rewritten to the include).
// The contents live in this template only: Helm keeps a release's chart,
// so they are in the release's record in the cluster (as werf's were),
// never in a file or the trace.
func secretFileTemplate(files map[string]string) string {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	b.WriteString("{{- define \"werf_secret_file\" -}}\n")
	b.WriteString("{{-   $path := . -}}\n{{-   if kindIs \"slice\" . -}}\n{{-     $path = index . 0 -}}\n{{-   end -}}\n")
	b.WriteString("{{-   $path = trimPrefix \"/\" (toString $path) -}}\n")
	b.WriteString("{{-   $files := dict")
	for _, p := range paths {
		fmt.Fprintf(&b, " %s %s", strconv.Quote(p), strconv.Quote(files[p]))
	}
	b.WriteString(" -}}\n")
	known := "none: there is no .helm/secret/ directory"
	if len(paths) > 0 {
		known = "one of '" + strings.Join(paths, "', '") + "'"
	}
	fmt.Fprintf(&b, "{{-   if hasKey $files $path -}}\n{{-     get $files $path -}}\n{{-   else -}}\n{{-     required (printf \"secret file '%%s' not found in .helm/secret/, use %s\" $path) nil -}}\n{{-   end -}}\n{{- end -}}\n",
		strings.ReplaceAll(known, `"`, `\"`))
	return b.String()
}

// WerfInput is what werf 1.1 put into .Values.global.werf.
type WerfInput struct {
	// Project is werf.yaml's project:.
	Project string
	// Repo is the images repository.
	Repo string
	// TagStrategy is the build's (gitlab.TagStagesSignature or
	// gitlab.TagOrBranch); Ref and RefSlug the ref built and its tag.
	TagStrategy string
	Ref         request.Ref
	RefSlug     string
}

// werfEmpty is werf 1.1's value of a key it had nothing for: the three
// characters "-" (quotes included).
const werfEmpty = `"-"`

// werfValues is .Values.global.werf as werf 1.1 filled it for the same
// images (pkg/deploy/service_values.go of werf 1.1): tag-or-branch is
// werf's --tag-git-tag or --tag-git-branch, stages-signature its
// --tag-by-stages-signature. An image's ID and digest are there for a
// branch's images, as in werf.
func werfValues(in WerfInput, images []request.Image) map[string]any {
	ci := map[string]any{
		"is_tag": false, "is_branch": false, "is_custom": false,
		"branch": werfEmpty, "tag": werfEmpty, "ref": werfEmpty,
	}
	w := map[string]any{
		"name": in.Project,
		"repo": strings.TrimRight(in.Repo, "/"),
		"ci":   ci,
	}
	branch := false
	switch {
	case in.TagStrategy == gitlab.TagOrBranch && in.Ref.Tag != "":
		ci["is_tag"], ci["tag"], ci["ref"] = true, in.RefSlug, in.RefSlug
		w["docker_tag"] = in.RefSlug
	case in.TagStrategy == gitlab.TagOrBranch:
		ci["is_branch"], ci["branch"], ci["ref"] = true, in.RefSlug, in.RefSlug
		w["docker_tag"] = in.RefSlug
		branch = true
	default:
		ci["is_tag_by_stages_signatures"] = true
	}
	named := map[string]any{}
	for _, img := range images {
		m := map[string]any{"docker_image": img.Reference(), "docker_tag": img.Tag}
		if branch {
			m["docker_image_id"], m["docker_image_digest"] = orEmpty(img.ID), orEmpty(img.Digest)
		}
		if img.Name == "" {
			w["image"], w["is_nameless_image"] = m, true
			continue
		}
		named[img.Name] = m
		w["is_nameless_image"] = false
	}
	if _, nameless := w["image"]; !nameless && len(images) > 0 {
		w["image"] = named
	}
	return w
}

func orEmpty(s string) string {
	if s == "" {
		return werfEmpty
	}
	return s
}
