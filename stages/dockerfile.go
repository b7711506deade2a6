package stages

import (
	"bufio"
	"bytes"
	"sort"
	"strings"
)

// withLabels is a Dockerfile with one LABEL instruction more, carrying
// labels, at the end of the stage the build makes (target's, else the
// last). The engine's own labels option would add one LABEL step per
// label, each a container on the classic builder; one instruction costs
// one step.
func withLabels(dockerfile []byte, target string, labels map[string]string) []byte {
	if len(labels) == 0 {
		return dockerfile
	}
	escape := dockerfileEscape(dockerfile)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var instr strings.Builder
	instr.WriteString("LABEL")
	for _, k := range keys {
		instr.WriteString(" " + quoteLabel(k, escape) + "=" + quoteLabel(labels[k], escape))
	}
	instr.WriteString("\n")

	// The logical instructions: a line ending in the escape character
	// goes on with the next; comments and blank lines stand alone.
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(dockerfile))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	insertAt := len(lines) // before this line
	if target != "" {
		inTarget := false
		continued := false
		for i, l := range lines {
			trimmed := strings.TrimSpace(l)
			startsInstruction := !continued && trimmed != "" && !strings.HasPrefix(trimmed, "#")
			if startsInstruction {
				if f := strings.Fields(trimmed); strings.EqualFold(f[0], "FROM") {
					if inTarget {
						insertAt = i
						break
					}
					inTarget = len(f) >= 4 && strings.EqualFold(f[len(f)-2], "AS") && strings.EqualFold(f[len(f)-1], target)
				}
			}
			if trimmed != "" && !strings.HasPrefix(trimmed, "#") {
				continued = strings.HasSuffix(strings.TrimRight(l, " \t"), string(escape))
			}
		}
	}
	var out bytes.Buffer
	for _, l := range lines[:insertAt] {
		out.WriteString(l + "\n")
	}
	out.WriteString(instr.String())
	for _, l := range lines[insertAt:] {
		out.WriteString(l + "\n")
	}
	return out.Bytes()
}

// dockerfileEscape is the Dockerfile's escape character: a backslash,
// unless an `# escape=` parser directive at its top says otherwise.
func dockerfileEscape(dockerfile []byte) byte {
	sc := bufio.NewScanner(bytes.NewReader(dockerfile))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(l, "#") {
			break
		}
		k, v, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(l, "#")), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "escape") && strings.TrimSpace(v) == "`" {
			return '`'
		}
	}
	return '\\'
}

// quoteLabel is s as a double-quoted Dockerfile word.
func quoteLabel(s string, escape byte) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', rune(escape), '$':
			b.WriteByte(escape)
		case '\n', '\r':
			r = ' '
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}
