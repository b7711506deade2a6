package deploy

import (
	"strings"
	"testing"
	"text/template"
)

func TestRewriteWerfCalls(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		// werf 1.1's three call forms.
		{`{{ tuple "backend" . | werf_container_image | indent 8 }}`, `{{ tuple "backend" . | include "werf_container_image" | indent 8 }}`},
		{`{{ tuple . | werf_container_image | indent 8 }}`, `{{ tuple . | include "werf_container_image" | indent 8 }}`},
		{`{{ werf_container_image . | indent 8 }}`, `{{ include "werf_container_image" . | indent 8 }}`},
		{`{{- tuple "app" . | werf_container_env | indent 8 -}}`, `{{- tuple "app" . | include "werf_container_env" | indent 8 -}}`},
		{"{{ werf_container_env\n . }}", "{{ include \"werf_container_env\"\n . }}"},
		// Left alone: text, strings, fields, variables, longer names,
		// comments, the define and include of the templates themselves.
		{`image: werf_container_image`, `image: werf_container_image`},
		{`{{ "werf_container_image" }}`, `{{ "werf_container_image" }}`},
		{"{{ `werf_container_image` }}", "{{ `werf_container_image` }}"},
		{`{{ .Values.werf_container_image }}`, `{{ .Values.werf_container_image }}`},
		{`{{ $werf_container_image := 1 }}`, `{{ $werf_container_image := 1 }}`},
		{`{{ my_werf_container_image . }}`, `{{ my_werf_container_image . }}`},
		{`{{ werf_container_images . }}`, `{{ werf_container_images . }}`},
		{`{{/* werf_container_image */}}`, `{{/* werf_container_image */}}`},
		{`{{ define "werf_container_image" }}x{{ end }}`, `{{ define "werf_container_image" }}x{{ end }}`},
		{`{{ include "werf_container_image" . }}`, `{{ include "werf_container_image" . }}`},
		// A "}}" inside a string does not end the action.
		{`{{ printf "}}" | werf_container_env }} werf_container_env`, `{{ printf "}}" | include "werf_container_env" }} werf_container_env`},
		// Two actions on a line; an unclosed one is left to the parser.
		{`{{ werf_container_image . }}{{ werf_container_env . }}`, `{{ include "werf_container_image" . }}{{ include "werf_container_env" . }}`},
		{`{{ werf_container_image .`, `{{ werf_container_image .`},
		// werf's other functions.
		{`{{ werf_secret_file "a/tls.key" | b64enc }}`, `{{ include "werf_secret_file" "a/tls.key" | b64enc }}`},
		{`{{ tuple "app" . | image }} {{ image_id . }}`, `{{ tuple "app" . | include "image" }} {{ include "image_id" . }}`},
		{`{{ .Values.image.tag }} {{ template "image" . }}`, `{{ .Values.image.tag }} {{ template "image" . }}`},
	} {
		if got := rewriteWerfCalls(c.in); got != c.want {
			t.Errorf("rewriteWerfCalls(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

// FuzzRewriteWerfCalls: a template without werf's function names is left
// byte for byte; one that parses still parses after the rewrite.
func FuzzRewriteWerfCalls(f *testing.F) {
	for _, s := range []string{
		`{{ tuple "backend" . | werf_container_image | indent 8 }}`,
		`{{ werf_container_env . }} {{ "}}" }}`,
		"{{/* a */}}{{ `x` }}{{ 'c' }}",
		`a {{ b`,
	} {
		f.Add(s)
	}
	funcs := template.FuncMap{"include": func(string, any) string { return "" }, "tuple": func(...any) []any { return nil }, "indent": func(int, string) string { return "" }}
	f.Fuzz(func(t *testing.T, in string) {
		out := rewriteWerfCalls(in)
		if !strings.Contains(in, "image") && !strings.Contains(in, "werf_") && out != in {
			t.Fatalf("changed a template without werf's functions: %q → %q", in, out)
		}
		withFuncs := template.FuncMap{}
		for _, name := range werfFunctions {
			withFuncs[name] = func(...any) string { return "" }
		}
		for k, v := range funcs {
			withFuncs[k] = v
		}
		if _, err := template.New("in").Funcs(withFuncs).Parse(in); err != nil {
			return
		}
		if _, err := template.New("out").Funcs(funcs).Parse(out); err != nil {
			t.Fatalf("the rewrite of a template that parses does not parse: %q → %q: %v", in, out, err)
		}
	})
}
