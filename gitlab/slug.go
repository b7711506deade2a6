// Package gitlab derives stagehand's CI environment from a GitLab job's
// variables. Everything here is pure: no I/O, no clock.
package gitlab

import (
	"fmt"
	"strings"

	"github.com/twmb/murmur3"
)

// Length limits of the names stagehand derives.
const (
	// TagSlugLimit is the longest Docker image tag.
	TagSlugLimit = 128
	// NamespaceSlugLimit is the longest DNS-1123 label, hence Kubernetes
	// namespace name.
	NamespaceSlugLimit = 63
	// ReleaseSlugLimit is the longest Helm release name.
	ReleaseSlugLimit = 53
)

// hashSuffixLen is "-" plus eight hex digits.
const hashSuffixLen = 9

// Slug makes s a lowercase name of [a-z0-9-] of at most limit characters.
// When s already is such a (non-empty) name it is returned unchanged; otherwise the
// cleaned name is cropped and suffixed with "-" and the murmur3 hash of s,
// so that two different inputs that clean to the same text stay apart and
// the same input always gives the same slug.
func Slug(s string, limit int) string {
	if limit <= hashSuffixLen {
		panic(fmt.Sprintf("gitlab.Slug: limit %d leaves no room for the hash suffix", limit))
	}
	clean := cleanSlug(s)
	if clean != "" && clean == s && len(clean) <= limit {
		return clean
	}
	hash := fmt.Sprintf("%08x", murmur3.StringSum32(s))
	crop := clean
	if len(crop) > limit-hashSuffixLen {
		crop = strings.TrimRight(crop[:limit-hashSuffixLen], "-")
	}
	if crop == "" {
		return hash
	}
	return crop + "-" + hash
}

// cleanSlug lowercases s, turns every character outside [a-z0-9-] into '-',
// squeezes runs of '-' and trims them from both ends.
func cleanSlug(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.Trim(b.String(), "-")
}

// IsDNS1123Label reports whether s is a valid Kubernetes namespace name.
func IsDNS1123Label(s string) bool {
	if s == "" || len(s) > NamespaceSlugLimit {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}
