package plan

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/config"
)

var signatureHex = regexp.MustCompile(`^[0-9a-f]{56}$`)

// TestCorpusOfRealProjects plans every config of testdata/corpus (real
// werf.yaml files of public projects and werf's own fixtures, see its
// README): those without ansible plan, with a signature for every stage;
// the ansible ones are refused naming their source line; the few werf 1.1
// refused too fail saying why. Each plan takes under 50 ms (P7, most of it
// rendering).
func TestCorpusOfRealProjects(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "corpus"))
	if err != nil {
		t.Fatal(err)
	}
	planned, refused := 0, 0
	var slowest time.Duration
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join("testdata", "corpus", e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			expect, err := os.ReadFile(filepath.Join(dir, "EXPECT"))
			if err != nil {
				t.Fatal(err)
			}
			want := strings.TrimSpace(string(expect))
			vars := map[string]string{}
			if env, err := os.ReadFile(filepath.Join(dir, "ENV")); err == nil {
				for _, l := range strings.Split(strings.TrimSpace(string(env)), "\n") {
					k, v, _ := strings.Cut(l, "=")
					vars[k] = v
				}
			}
			start := time.Now()
			p, err := planDir(dir, vars)
			took := time.Since(start)
			switch kind, arg, _ := strings.Cut(want, " "); kind {
			case "plan":
				if err != nil {
					t.Fatalf("does not plan: %v", err)
				}
				for _, ip := range p.Images {
					for _, s := range ip.Stages {
						if !signatureHex.MatchString(s.Signature) {
							t.Errorf("%s: signature %q", s, s.Signature)
						}
					}
					if ip.Final == nil {
						t.Errorf("%s: no final stage", ip.Image.Describe())
					}
				}
				planned++
				if took > slowest {
					slowest = took
				}
				if took > 50*time.Millisecond {
					t.Errorf("planned in %s, want under 50 ms (P7)", took)
				}
			case "ansible":
				if err == nil || !strings.Contains(err.Error(), `"ansible" is not supported`) {
					t.Fatalf("ansible is not refused: %v", err)
				}
				var ce *config.ConfigError
				if arg == "rendered" {
					if !strings.Contains(err.Error(), "line of the rendered config") {
						t.Errorf("the error does not say its line is the rendered config's: %v", err)
					}
				} else if !strings.Contains(err.Error(), ":"+arg+": ") || !errors.As(err, &ce) || strconv.Itoa(ce.Line) != arg {
					t.Errorf("the error does not name source line %s: %v", arg, err)
				}
				refused++
			case "error":
				if err == nil || !strings.Contains(err.Error(), arg) {
					t.Fatalf("got %v, want an error with %q", err, arg)
				}
			default:
				t.Fatalf("EXPECT %q", want)
			}
		})
	}
	t.Logf("%d configs planned (slowest %s), %d ansible configs refused naming their line", planned, slowest.Round(time.Microsecond), refused)
	if planned < 30 {
		t.Errorf("only %d configs planned", planned)
	}
}

// planDir plans a project directory as `stagehand plan` does, fromLatest
// bases given a made-up digest.
func planDir(dir string, vars map[string]string) (*Plan, error) {
	cfg, err := config.LoadConfig(dir, vars)
	if err != nil {
		return nil, err
	}
	src, err := OpenSource(dir)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	ignores, err := DockerIgnores(cfg, src)
	if err != nil {
		return nil, err
	}
	bases := BaseDigests{}
	for _, ref := range cfg.LatestBases() {
		bases[ref] = "sha256:" + strings.Repeat("0", 64)
	}
	return New(cfg, Inputs{Tree: src.Tree(), Bases: bases, DockerIgnore: ignores})
}
