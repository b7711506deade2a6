package stages

import "testing"

func TestWithLabels(t *testing.T) {
	labels := map[string]string{"io.stagehand.stage": "dockerfile", "io.stagehand.image": `we"ird $x`}
	const label = `LABEL "io.stagehand.image"="we\"ird \$x" "io.stagehand.stage"="dockerfile"` + "\n"
	for _, c := range []struct {
		name, in, target, want string
	}{
		{"at the end", "FROM a\nRUN make\n", "", "FROM a\nRUN make\n" + label},
		{"no final newline", "FROM a\nCMD x", "", "FROM a\nCMD x\n" + label},
		{"target stage in the middle", "FROM a AS build\nRUN make \\\n  FROM-not-an-instruction\n# FROM comment\n\nFROM b AS final\nCOPY --from=build /x /x\n", "build",
			"FROM a AS build\nRUN make \\\n  FROM-not-an-instruction\n# FROM comment\n\n" + label + "FROM b AS final\nCOPY --from=build /x /x\n"},
		{"target is the last stage", "FROM a AS build\nRUN make\nfrom b as Final\nCMD y\n", "final", "FROM a AS build\nRUN make\nfrom b as Final\nCMD y\n" + label},
		{"backtick escape", "# escape=`\nFROM a\n", "", "# escape=`\nFROM a\n" + "LABEL \"io.stagehand.image\"=\"we`\"ird `$x\" \"io.stagehand.stage\"=\"dockerfile\"\n"},
	} {
		if got := string(withLabels([]byte(c.in), c.target, labels)); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
	if got := string(withLabels([]byte("FROM a\n"), "", nil)); got != "FROM a\n" {
		t.Errorf("no labels: %q", got)
	}
}
