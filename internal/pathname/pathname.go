// Package pathname names host directories after things jobs name
// (projects, URLs, mount targets).
package pathname

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strings"
)

// Dir is one readable path element for name, with a hash of name: names
// that differ only in characters a file name cannot hold ("a/b_c",
// "a_b/c") never share a directory, so one project never reads another's.
func Dir(name string) string {
	sum := sha256.Sum256([]byte(name))
	b := []byte(strings.Trim(path.Clean(name), "/"))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 80 {
		b = b[len(b)-80:]
	}
	if len(b) == 0 || b[0] == '.' {
		b = append([]byte{'_'}, b...)
	}
	return string(b) + "-" + hex.EncodeToString(sum[:6])
}
