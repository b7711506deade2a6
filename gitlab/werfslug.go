package gitlab

import (
	"fmt"
	"strings"

	"github.com/twmb/murmur3"
)

// werf 1.1's names (its pkg/slug), which a project moving from werf must
// get again: the same image tags, namespaces and releases. A name that is
// already valid is kept as it is; any other is transliterated (see
// translit), and suffixed with a hash of the original so that two names
// that clean alike stay apart.

// isDockerTag matches werf's ^[\w][\w.-]*$ (ASCII \w). Hand-written: the
// hooks binary starts for every stage of every job and compiles no
// regexp.
func isDockerTag(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		word := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
		if !word && (i == 0 || (c != '.' && c != '-')) {
			return false
		}
	}
	return s != ""
}

// isDNS1123Subdomain matches labels of [a-z0-9]([-a-z0-9]*[a-z0-9])?
// joined by '.'.
func isDNS1123Subdomain(s string) bool {
	for _, label := range strings.Split(s, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// DockerTag is werf's image tag of a branch or git tag name: kept when it
// is a valid tag (letters of either case, digits, '_', '.', '-', not
// starting with '.' or '-', at most 128 characters), else slugged.
func DockerTag(s string) string {
	if s == "" || (len(s) <= TagSlugLimit && isDockerTag(s)) {
		return s
	}
	return slugWithHash(s, TagSlugLimit)
}

// KubernetesNamespace is werf's namespace name: kept when it is a DNS-1123
// subdomain of at most 63 characters, else slugged.
func KubernetesNamespace(s string) string { return dnsName(s, NamespaceSlugLimit) }

// HelmRelease is werf's release name: kept when it is a DNS-1123 subdomain
// of at most 53 characters, else slugged.
func HelmRelease(s string) string { return dnsName(s, ReleaseSlugLimit) }

func dnsName(s string, limit int) string {
	if s == "" || (len(s) <= limit && isDNS1123Subdomain(s)) {
		return s
	}
	return slugWithHash(s, limit)
}

// slugWithHash is s transliterated, cropped to leave room for '-' and the
// hash of s, then the hash; the hash alone when nothing is left. As in
// werf, the hash is murmur3 in hex without leading zeros, and a '-' left
// at the crop stays.
func slugWithHash(s string, limit int) string {
	slug := werfSlugify(s)
	hash := fmt.Sprintf("%x", murmur3.StringSum32(s))
	if slug == "" {
		return hash
	}
	if room := limit - len(hash) - 1; len(slug) > room {
		slug = slug[:room]
	}
	return slug + "-" + hash
}

// werfSlugify transliterates s code point by code point: unknown ones are
// dropped, separators become one '-' (never leading, one trailing removed).
func werfSlugify(s string) string {
	var b strings.Builder
	for _, r := range s {
		t, ok := translit()[r]
		if !ok || t == "" {
			continue
		}
		if t == "-" {
			if b.Len() == 0 || strings.HasSuffix(b.String(), "-") {
				continue
			}
		}
		b.WriteString(t)
	}
	return strings.TrimSuffix(b.String(), "-")
}
