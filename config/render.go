package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/Masterminds/sprig/v3"
	"github.com/bmatcuk/doublestar/v4"
	yaml "go.yaml.in/yaml/v3"
)

// Rendering, as werf 1.1 rendered werf.yaml: the whole file is one Go
// template, rendered before it is split into documents, with
//
//   - sprig's functions (what Helm charts have: indent, nindent, set,
//     dict, list, trimSuffix, sha256sum, ...),
//   - include and tpl, required, fromYaml/toYaml,
//   - env and expandenv, which read the job's variables (not the
//     runner's environment),
//   - .Files.Get and .Files.Glob over the project's files, and
//   - every .werf/**/*.tmpl file as a named template (its path below
//     .werf: `include "artifact/app.tmpl" .`).
//
// The root data is a map holding Files (werf's) and Env (the job's
// variables, stagehand's), which templates may add to with `set`.
//
// What a config may make the runner do is bounded: the output (16 MiB,
// include and tpl included), the nesting of include and tpl, the counts
// given to functions that build long strings or lists, and .Files, which
// reads nothing outside the project. Functions that reach the network or
// burn CPU (key generation, bcrypt, DNS lookups) are left out.

// TemplatesDir holds the partials, relative to the config's directory.
const TemplatesDir = ".werf"

// maxRenderedConfig bounds what a config's templates may render: a
// runaway range must end as an error, not fill the runner host's memory.
const maxRenderedConfig = 16 << 20

// maxNesting bounds include and tpl calls inside each other (a template
// that includes itself).
const maxNesting = 100

// maxCount bounds the counts given to functions that build strings or
// lists from them (repeat, until, seq, rand*, indent).
const maxCount = 1 << 20

// maxIterations bounds the iterations of every range of a rendering
// together: each range pays for its length when it starts, so loops that
// spin without output end too.
const maxIterations = 10_000_000

// renderTimeout bounds the rendering of a config, whatever else spins
// (a variable for the fuzz test).
var renderTimeout = 20 * time.Second

var errConfigTooLarge = errors.New("rendered config too large")

// Source is a config's text and where its templates come from.
type Source struct {
	// File is the config's name as errors give it (werf.yaml).
	File string
	Text []byte
	// Partials are the .werf/**/*.tmpl files, by name (their path below
	// .werf), and their text.
	Partials map[string][]byte
	// Dir is the config's directory (.Files reads below it); Root is the
	// project's (.Files never leaves it). Empty: .Files finds nothing.
	Dir, Root string
}

// Rendered is a config's rendered text and what rendering said.
type Rendered struct {
	Text []byte
	// Warnings are what werf would have printed (a .Files.Get of a file
	// that does not exist).
	Warnings []string
	lines    *lineMap
}

// renderer is one rendering's state.
type renderer struct {
	src        Source
	vars       map[string]string
	budget     int
	iterations int
	nesting    int
	tmpl       *template.Template
	warnings   []string
}

// Render renders a config's templates with the job's variables.
func Render(src Source, vars map[string]string) (*Rendered, error) {
	if vars == nil {
		vars = map[string]string{}
	}
	type result struct {
		r   *Rendered
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := render(src, vars)
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		return res.r, res.err
	case <-time.After(renderTimeout):
		return nil, &ConfigError{File: src.File, Msg: fmt.Sprintf("the templates did not finish rendering within %s: look for a range that repeats without end", renderTimeout)}
	}
}

func render(src Source, vars map[string]string) (*Rendered, error) {
	r := &renderer{src: src, vars: vars, budget: maxRenderedConfig}
	root := template.New(src.File).Funcs(r.funcs())
	names := make([]string, 0, len(src.Partials))
	for n := range src.Partials {
		names = append(names, n)
	}
	sort.Strings(names)
	// Partials first, the config last: a define in the config wins, as
	// in werf.
	for _, n := range names {
		if _, err := root.New(n).Parse(string(src.Partials[n])); err != nil {
			return nil, r.templateError(err)
		}
	}
	t, err := root.New(src.File).Parse(string(src.Text))
	if err != nil {
		return nil, r.templateError(err)
	}
	boundRanges(t)
	r.tmpl = t
	out := &cappedBuffer{r: r}
	data := map[string]any{"Files": files{r: r}, "Env": vars}
	if err := t.Execute(out, data); err != nil {
		if errors.Is(err, errConfigTooLarge) {
			return nil, &ConfigError{File: src.File, Msg: fmt.Sprintf("the templates render more than %d MiB: look for a range or template call that repeats without end", maxRenderedConfig>>20)}
		}
		return nil, r.templateError(err)
	}
	return &Rendered{Text: out.Bytes(), Warnings: r.warnings, lines: newLineMap(src, out.Bytes())}, nil
}

// cappedBuffer is a bytes.Buffer that spends the rendering's budget.
type cappedBuffer struct {
	bytes.Buffer
	r *renderer
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if len(p) > b.r.budget {
		return 0, errConfigTooLarge
	}
	b.r.budget -= len(p)
	return b.Buffer.Write(p)
}

// excluded are sprig's functions a config does not get: they reach the
// network or spend seconds of CPU on the runner host.
var excluded = []string{
	"getHostByName", "genPrivateKey", "genCA", "genCAWithKey", "genSelfSignedCert", "genSelfSignedCertWithKey",
	"genSignedCert", "genSignedCertWithKey", "derivePassword", "bcrypt", "htpasswd",
}

func (r *renderer) funcs() template.FuncMap {
	f := sprig.TxtFuncMap()
	for _, n := range excluded {
		delete(f, n)
	}
	f["env"] = func(name string) string { return r.vars[name] }
	f["expandenv"] = func(s string) string { return os.Expand(s, func(k string) string { return r.vars[k] }) }
	f["required"] = func(msg string, v any) (any, error) {
		if v == nil || v == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	f[boundFunc] = r.bound
	f["include"] = r.include
	f["tpl"] = r.tpl
	f["fromYaml"] = fromYaml
	f["toYaml"] = toYaml
	// Counts that make long strings or lists are bounded.
	repeat, until, untilStep, seq := f["repeat"].(func(int, string) string), f["until"].(func(int) []int), f["untilStep"].(func(int, int, int) []int), f["seq"].(func(...int) string)
	f["repeat"] = func(n int, s string) (string, error) {
		if err := count("repeat", n*max(len(s), 1)); err != nil {
			return "", err
		}
		return repeat(n, s), nil
	}
	f["until"] = func(n int) ([]int, error) {
		if err := count("until", n); err != nil {
			return nil, err
		}
		return until(n), nil
	}
	f["untilStep"] = func(start, stop, step int) ([]int, error) {
		if step != 0 {
			if err := count("untilStep", (stop-start)/step); err != nil {
				return nil, err
			}
		}
		return untilStep(start, stop, step), nil
	}
	f["seq"] = func(params ...int) (string, error) {
		if len(params) > 0 {
			lo, hi := 1, params[len(params)-1]
			if len(params) > 1 {
				lo = params[0]
			}
			if err := count("seq", hi-lo); err != nil {
				return "", err
			}
		}
		return seq(params...), nil
	}
	for _, name := range []string{"randAlphaNum", "randAlpha", "randAscii", "randNumeric"} {
		fn := f[name].(func(int) string)
		f[name] = func(n int) (string, error) {
			if err := count(name, n); err != nil {
				return "", err
			}
			return fn(n), nil
		}
	}
	randBytes := f["randBytes"].(func(int) (string, error))
	f["randBytes"] = func(n int) (string, error) {
		if err := count("randBytes", n); err != nil {
			return "", err
		}
		return randBytes(n)
	}
	indent, nindent := f["indent"].(func(int, string) string), f["nindent"].(func(int, string) string)
	f["indent"] = func(n int, s string) (string, error) {
		if err := count("indent", n); err != nil {
			return "", err
		}
		return indent(n, s), nil
	}
	f["nindent"] = func(n int, s string) (string, error) {
		if err := count("nindent", n); err != nil {
			return "", err
		}
		return nindent(n, s), nil
	}
	return f
}

func count(fn string, n int) error {
	if n > maxCount || n < -maxCount {
		return fmt.Errorf("%s: %d is more than a config may ask for (%d)", fn, n, maxCount)
	}
	return nil
}

// include runs a named template and answers its output, as Helm's and
// werf's include.
func (r *renderer) include(name string, data any) (string, error) {
	if r.nesting >= maxNesting {
		return "", fmt.Errorf("include %q: templates nested more than %d deep (a template that includes itself?)", name, maxNesting)
	}
	r.nesting++
	defer func() { r.nesting-- }()
	out := &cappedBuffer{r: r}
	if err := r.tmpl.ExecuteTemplate(out, name, data); err != nil {
		return "", err
	}
	return out.String(), nil
}

// tpl renders a string as a template of the config's set.
func (r *renderer) tpl(text string, data any) (string, error) {
	if r.nesting >= maxNesting {
		return "", fmt.Errorf("tpl: templates nested more than %d deep", maxNesting)
	}
	r.nesting++
	defer func() { r.nesting-- }()
	t, err := r.tmpl.Clone()
	if err != nil {
		return "", err
	}
	t, err = t.New("tpl").Parse(text)
	if err != nil {
		return "", err
	}
	boundRanges(t)
	out := &cappedBuffer{r: r}
	if err := t.Execute(out, data); err != nil {
		return "", err
	}
	return out.String(), nil
}

// boundFunc is the function boundRanges puts at the end of every range's
// pipeline.
const boundFunc = "__stagehand_range"

// boundRanges makes every range of the templates of t's set pay for its
// length (see bound) before it starts.
func boundRanges(t *template.Template) {
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			boundNode(tt.Tree.Root)
		}
	}
}

func boundNode(n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			boundNode(c)
		}
	case *parse.RangeNode:
		if p := n.Pipe; p != nil && !bounded(p) {
			p.Cmds = append(p.Cmds, &parse.CommandNode{NodeType: parse.NodeCommand, Pos: p.Pos,
				Args: []parse.Node{&parse.IdentifierNode{NodeType: parse.NodeIdentifier, Pos: p.Pos, Ident: boundFunc}}})
		}
		boundNode(n.List)
		boundNode(n.ElseList)
	case *parse.IfNode:
		boundNode(n.List)
		boundNode(n.ElseList)
	case *parse.WithNode:
		boundNode(n.List)
		boundNode(n.ElseList)
	}
}

func bounded(p *parse.PipeNode) bool {
	if len(p.Cmds) == 0 {
		return false
	}
	last := p.Cmds[len(p.Cmds)-1]
	id, ok := last.Args[0].(*parse.IdentifierNode)
	return ok && id.Ident == boundFunc
}

// bound passes what a range ranges over on, after taking its length from
// the rendering's iterations.
func (r *renderer) bound(v any) (any, error) {
	n := 0
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n = int(min(max(rv.Int(), 0), maxIterations+1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n = int(min(rv.Uint(), maxIterations+1))
	case reflect.Slice, reflect.Array, reflect.Map, reflect.String:
		n = rv.Len()
	case reflect.Chan:
		return nil, errors.New("range over a channel is not allowed in a config")
	}
	if r.iterations += n; r.iterations > maxIterations {
		return nil, fmt.Errorf("the config's ranges iterate more than %d times in all: look for a range that repeats without end", maxIterations)
	}
	return v, nil
}

func fromYaml(s string) (map[string]any, error) {
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("fromYaml: %w", err)
	}
	return m, nil
}

func toYaml(v any) (string, error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("toYaml: %w", err)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// files is .Files: the project's files, as werf gave them to werf.yaml.
type files struct{ r *renderer }

// path resolves a path given to .Files below the config's directory; ok
// is false when it leaves the project (or no project is known).
func (f files) path(p string) (string, bool) {
	src := f.r.src
	if src.Dir == "" {
		return "", false
	}
	full := filepath.Join(src.Dir, filepath.FromSlash(p))
	root := src.Root
	if root == "" {
		root = src.Dir
	}
	rel, err := filepath.Rel(root, full)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	// A symlink may not lead out either.
	if real, err := filepath.EvalSymlinks(full); err == nil {
		realRoot, _ := filepath.EvalSymlinks(root)
		if rel, err := filepath.Rel(realRoot, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return "", false
		}
	}
	return full, true
}

// Get is a file's content; "" (and a warning, as werf gave) when it does
// not exist.
func (f files) Get(p string) (string, error) {
	full, ok := f.path(p)
	if !ok {
		return "", fmt.Errorf(".Files.Get %q: the path leaves the project", p)
	}
	b, err := os.ReadFile(full)
	if err != nil {
		f.r.warnings = append(f.r.warnings, fmt.Sprintf("{{ .Files.Get %q }}: %v", p, err))
		return "", nil
	}
	if len(b) > f.r.budget {
		return "", errConfigTooLarge
	}
	return string(b), nil
}

// Glob is the files matching a pattern (** across directories), by their
// path relative to the config's directory; nil when none match.
func (f files) Glob(pattern string) (map[string]any, error) {
	dir := f.r.src.Dir
	if dir == "" {
		return nil, nil
	}
	if !doublestar.ValidatePattern(pattern) {
		return nil, fmt.Errorf(".Files.Glob %q: not a valid pattern", pattern)
	}
	var out map[string]any
	total := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if err == nil && d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if ok, _ := doublestar.Match(strings.TrimPrefix(path.Clean(pattern), "./"), rel); !ok {
			return nil
		}
		full, ok := f.path(rel)
		if !ok {
			return nil
		}
		b, err := os.ReadFile(full)
		if err != nil {
			return nil
		}
		if total += len(b); total > f.r.budget {
			return errConfigTooLarge
		}
		if out == nil {
			out = map[string]any{}
		}
		out[rel] = string(b)
		return nil
	})
	return out, err
}

var templateLine = regexp.MustCompile(`^template: ([^:]+):(\d+):(?:\d+:)? ?(.*)$`)

// templateStarted finds where an unclosed action began, which is where the
// user has to look, rather than the end of the file.
var templateStarted = regexp.MustCompile(`started at [^:]+:(\d+)`)

// templateError names the file (the config, or a partial below .werf)
// and line of a template error.
func (r *renderer) templateError(err error) error {
	msg := err.Error()
	// An error inside include or tpl is wrapped by the calling action:
	// the innermost template is where the user has to look.
	if i := strings.LastIndex(msg, "template: "); i > 0 {
		msg = msg[i:]
	}
	m := templateLine.FindStringSubmatch(msg)
	if m == nil {
		return &ConfigError{File: r.src.File, Msg: "template: " + msg}
	}
	file := r.src.File
	if _, ok := r.src.Partials[m[1]]; ok {
		file = path.Join(TemplatesDir, m[1])
	}
	line, _ := strconv.Atoi(m[2])
	if s := templateStarted.FindStringSubmatch(m[3]); s != nil {
		line, _ = strconv.Atoi(s[1])
	}
	return &ConfigError{File: file, Line: line, Msg: "template: " + m[3]}
}

// lineMap finds, for a line of the rendered config, the line of the
// config or of a partial it came from: the first one with the same text,
// counting the occurrences of that text before it. A line that templates
// made (no source line has its text) keeps its rendered number.
type lineMap struct {
	file  string
	text  []string
	where map[string][]sourceLine
	// plain: the config has no template action, lines are its own.
	plain bool
}

type sourceLine struct {
	file string
	line int
}

func newLineMap(src Source, rendered []byte) *lineMap {
	m := &lineMap{file: src.File, text: strings.Split(string(rendered), "\n"), where: map[string][]sourceLine{}}
	m.plain = !bytes.Contains(src.Text, []byte("{{"))
	if m.plain {
		return m
	}
	add := func(file string, text []byte) {
		for i, l := range strings.Split(string(text), "\n") {
			if t := strings.TrimSpace(l); t != "" {
				m.where[t] = append(m.where[t], sourceLine{file, i + 1})
			}
		}
	}
	add(src.File, src.Text)
	names := make([]string, 0, len(src.Partials))
	for n := range src.Partials {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		add(path.Join(TemplatesDir, n), src.Partials[n])
	}
	return m
}

// source answers where rendered line n (1-based) came from, and whether
// it is known.
func (m *lineMap) source(n int) (string, int, bool) {
	if m == nil || m.plain || n < 1 || n > len(m.text) {
		return m.file, n, m != nil && m.plain
	}
	t := strings.TrimSpace(m.text[n-1])
	cands := m.where[t]
	if t == "" || len(cands) == 0 {
		return m.file, n, false
	}
	k := 0
	for i := 0; i < n-1; i++ {
		if strings.TrimSpace(m.text[i]) == t {
			k++
		}
	}
	if k >= len(cands) {
		k = len(cands) - 1
	}
	return cands[k].file, cands[k].line, true
}
