package deploy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/secret"
)

// werf 1.1's secret places in a chart, and its key's.
const (
	SecretValuesFile = "secret-values.yaml"
	SecretDir        = "secret"
)

// chartSecrets are a chart's secrets, decrypted.
type chartSecrets struct {
	// Values is secret-values.yaml in clear (nil when the chart has none).
	Values []byte
	// Files are the files of secret/, by their paths below it.
	Files map[string]string
}

// masks are the decrypted texts a message must never show: the secret
// files and values of four characters or more (shorter ones would mask
// common words).
func (s chartSecrets) masks() []string {
	var out []string
	for _, f := range s.Files {
		for _, l := range strings.Split(f, "\n") {
			if l = strings.TrimSpace(l); len(l) >= 4 {
				out = append(out, l)
			}
		}
	}
	for _, l := range strings.Split(string(s.Values), "\n") {
		_, v, ok := strings.Cut(l, ":")
		if v = strings.Trim(strings.TrimSpace(v), `"'`); ok && len(v) >= 4 {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// scrub masks the secrets in an error's text, keeping its blame.
func (s chartSecrets) scrub(err error) error {
	if err == nil {
		return nil
	}
	msg, changed := err.Error(), false
	for _, m := range s.masks() {
		if strings.Contains(msg, m) {
			msg, changed = strings.ReplaceAll(msg, m, "[MASKED]"), true
		}
	}
	if !changed {
		return err
	}
	if fault.KindOf(err) == fault.KindJob {
		return fault.Job(errors.New(msg))
	}
	return fault.System(errors.New(msg))
}

// readSecrets decrypts the chart's secret-values.yaml and secret/ files
// with the key of vars (WERF_SECRET_KEY, STAGEHAND_SECRET_KEY) or of the
// project's .werf_secret_key. A chart without secrets needs no key.
func readSecrets(chartDir, projectDir string, vars map[string]string) (chartSecrets, error) {
	var out chartSecrets
	valuesPath := filepath.Join(chartDir, SecretValuesFile)
	values, err := os.ReadFile(valuesPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return out, fault.Jobf("read %s: %w", valuesPath, err)
	}
	dir := filepath.Join(chartDir, SecretDir)
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return out, fault.Jobf("read %s: %w", dir, err)
	}
	if values == nil && len(files) == 0 {
		return out, nil
	}
	first := valuesPath
	if values == nil {
		first = files[0]
	}
	key, err := secret.KeyFrom(projectDir, vars)
	if err != nil {
		return out, fault.Jobf("%s is encrypted and %w", rel(projectDir, first), err)
	}
	if values != nil {
		if out.Values, err = key.DecryptValues(values); err != nil {
			return out, fault.Jobf("%s: %w", rel(projectDir, valuesPath), err)
		}
	}
	out.Files = map[string]string{}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return out, fault.Jobf("read %s: %w", rel(projectDir, p), err)
		}
		plain, err := key.Decrypt(strings.TrimRightFunc(string(b), unicode.IsSpace))
		if err != nil {
			return out, fault.Jobf("%s: %w", rel(projectDir, p), err)
		}
		r, _ := filepath.Rel(dir, p)
		out.Files[filepath.ToSlash(r)] = string(plain)
	}
	return out, nil
}

func rel(base, p string) string {
	if r, err := filepath.Rel(base, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}
