package harness

import (
	"regexp"
	"strings"
)

var (
	// runner trace line prefix: "2026-11-24T05:05:18.404351Z 00O " (or "00O+")
	tracePrefix = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT[0-9:.]+Z [0-9a-f]{2}[OE][ +]?`)
	ansi        = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
	section     = regexp.MustCompile(`section_(start|end):\d+:[A-Za-z0-9_.\-]+(\[[^\]]*\])?\r?`)
)

// Readable turns a raw job trace into what GitLab's job page would show as
// text: no timestamps, colours or section markers.
func Readable(trace string) string {
	s := tracePrefix.ReplaceAllString(trace, "")
	s = section.ReplaceAllString(s, "")
	s = ansi.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, "\r", "")
}
