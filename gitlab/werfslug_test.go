package gitlab

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestWerfNames checks werf 1.1's names against werf's own slug test rows
// and further cases derived from its algorithm (testdata/werf-slug.tsv).
func TestWerfNames(t *testing.T) {
	f, err := os.Open("testdata/werf-slug.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	funcs := map[string]func(string) string{
		"DockerTag": DockerTag, "KubernetesNamespace": KubernetesNamespace, "HelmRelease": HelmRelease,
	}
	rows := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cols := strings.Split(line, "\t")
		if len(cols) != 4 {
			t.Fatalf("bad row %q", line)
		}
		in, err1 := strconv.Unquote(cols[2])
		want, err2 := strconv.Unquote(cols[3])
		fn := funcs[cols[1]]
		if err1 != nil || err2 != nil || fn == nil {
			t.Fatalf("bad row %q", line)
		}
		if got := fn(in); got != want {
			t.Errorf("%s %s(%q) = %q, want %q", cols[0], cols[1], in, got, want)
		}
		rows[cols[0]]++
	}
	if rows["werf"] < 10 || rows["werf"]+rows["derived"] < 40 {
		t.Errorf("rows: %v", rows)
	}
}
