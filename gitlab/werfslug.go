package gitlab

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spaolacci/murmur3"
)

// werf 1.1's names (its pkg/slug), which a project moving from werf must
// get again: the same image tags, namespaces and releases. A name that is
// already valid is kept as it is; any other is transliterated (see
// translit), and suffixed with a hash of the original so that two names
// that clean alike stay apart.

var (
	dockerTagValid = regexp.MustCompile(`^[\w][\w.-]*$`)
	dns1123        = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// DockerTag is werf's image tag of a branch or git tag name: kept when it
// is a valid tag (letters of either case, digits, '_', '.', '-', not
// starting with '.' or '-', at most 128 characters), else slugged.
func DockerTag(s string) string {
	if s == "" || (len(s) <= TagSlugLimit && dockerTagValid.MatchString(s)) {
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
	if s == "" || (len(s) <= limit && dns1123.MatchString(s)) {
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
	hash := fmt.Sprintf("%x", murmur3.Sum32([]byte(s)))
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
		t, ok := translit[r]
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
