package gitlab

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/murmur3"
)

func hashOf(s string) string { return fmt.Sprintf("%08x", murmur3.StringSum32(s)) }

func TestSlug(t *testing.T) {
	long := strings.Repeat("a", 70)
	tests := []struct {
		in    string
		limit int
		want  string
	}{
		{"main", TagSlugLimit, "main"},
		{"feature-x", NamespaceSlugLimit, "feature-x"},
		{"sample-review-feature-x", NamespaceSlugLimit, "sample-review-feature-x"},
		{"Feature/X", TagSlugLimit, "feature-x-" + hashOf("Feature/X")},
		{"review/feature_x", NamespaceSlugLimit, "review-feature-x-" + hashOf("review/feature_x")},
		{"a--b", TagSlugLimit, "a-b-" + hashOf("a--b")},
		{"-lead", TagSlugLimit, "lead-" + hashOf("-lead")},
		{"v1.2.3", TagSlugLimit, "v1-2-3-" + hashOf("v1.2.3")},
		{"", TagSlugLimit, hashOf("")},
		{"///", TagSlugLimit, hashOf("///")},
		{"ünïcode", TagSlugLimit, "n-code-" + hashOf("ünïcode")},
		// unchanged but too long: cropped to limit-9 and hashed
		{long, NamespaceSlugLimit, strings.Repeat("a", 54) + "-" + hashOf(long)},
		{long[:63], NamespaceSlugLimit, long[:63]},
		{long[:64], NamespaceSlugLimit, strings.Repeat("a", 54) + "-" + hashOf(long[:64])},
		// a crop ending in '-' loses it
		{strings.Repeat("a", 43) + "-" + strings.Repeat("b", 20), ReleaseSlugLimit,
			strings.Repeat("a", 43) + "-" + hashOf(strings.Repeat("a", 43)+"-"+strings.Repeat("b", 20))},
	}
	for _, tt := range tests {
		got := Slug(tt.in, tt.limit)
		if got != tt.want {
			t.Errorf("Slug(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
		}
		if len(got) > tt.limit {
			t.Errorf("Slug(%q, %d) = %q is longer than the limit", tt.in, tt.limit, got)
		}
	}
}

func TestSlugKeepsDifferentInputsApart(t *testing.T) {
	a, b := Slug("Review/X", TagSlugLimit), Slug("review-x", TagSlugLimit)
	if a == b {
		t.Fatalf("Slug gave %q for both Review/X and review-x", a)
	}
}

func TestIsDNS1123Label(t *testing.T) {
	tests := map[string]bool{
		"a": true, "sample-review": true, "0abc": true, strings.Repeat("a", 63): true,
		"": false, "-a": false, "a-": false, "A": false, "a_b": false, "a.b": false,
		strings.Repeat("a", 64): false,
	}
	for in, want := range tests {
		if got := IsDNS1123Label(in); got != want {
			t.Errorf("IsDNS1123Label(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzSlug(f *testing.F) {
	for _, s := range []string{"main", "Feature/X", "", "---", "ünï", strings.Repeat("x-", 80)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, limit := range []int{ReleaseSlugLimit, NamespaceSlugLimit, TagSlugLimit} {
			got := Slug(s, limit)
			if len(got) > limit {
				t.Fatalf("Slug(%q, %d) = %q: too long", s, limit, got)
			}
			if limit == NamespaceSlugLimit && !IsDNS1123Label(got) {
				t.Fatalf("Slug(%q, %d) = %q: not a DNS-1123 label", s, limit, got)
			}
			if Slug(s, limit) != got {
				t.Fatalf("Slug(%q, %d) not deterministic", s, limit)
			}
			if IsDNS1123Label(s) && !strings.Contains(s, "--") && len(s) <= limit && got != s {
				t.Fatalf("Slug(%q, %d) = %q changed a valid name", s, limit, got)
			}
		}
	})
}

// The slugs' hash is werf's: MurmurHash3 x86_32 with seed 0. Literal
// values, so that the hash cannot drift with the library computing it.
func TestSlugHashIsMurmur3(t *testing.T) {
	for in, want := range map[string]string{
		"":              "00000000",
		"hello":         "248bfa47",
		"Hello, world!": "c0363e43",
		"The quick brown fox jumps over the lazy dog": "2e4ff723",
	} {
		if got := hashOf(in); got != want {
			t.Errorf("murmur3(%q) = %s, want %s", in, got, want)
		}
	}
}
