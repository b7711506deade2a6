package request

import (
	"strings"
	"testing"
)

func TestRefFromCI(t *testing.T) {
	for _, c := range []struct {
		name string
		vars map[string]string
		want Ref
		ok   bool
	}{
		{"tag pipeline", map[string]string{"CI_COMMIT_TAG": "v1.0.0", "CI_COMMIT_REF_NAME": "v1.0.0"}, Ref{Tag: "v1.0.0"}, true},
		// werf published the branch of a branch pipeline, even when the
		// commit is also tagged.
		{"branch pipeline on a tagged commit", map[string]string{"CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_NAME": "main"}, Ref{Branch: "main"}, true},
		{"branch from CI_COMMIT_BRANCH", map[string]string{"CI_COMMIT_BRANCH": "feature/x", "CI_COMMIT_REF_NAME": "other"}, Ref{Branch: "feature/x"}, true},
		{"merge request pipeline: the ref name", map[string]string{"CI_COMMIT_REF_NAME": "feature/x"}, Ref{Branch: "feature/x"}, true},
		{"empty tag is no tag", map[string]string{"CI_COMMIT_TAG": "", "CI_COMMIT_BRANCH": "main"}, Ref{Branch: "main"}, true},
		{"no CI variables", map[string]string{"HOME": "/root"}, Ref{}, false},
	} {
		got, ok := RefFromCI(c.vars)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestProjectNameIsGitLabsPathSlug(t *testing.T) {
	for in, want := range map[string]string{
		"group/shop":             "group-shop",
		"Group/Sub.Group/Shop_1": "group-sub-group-shop-1",
		"crash":                  "crash",
		"-odd-/name-":            "odd--name",
		strings.Repeat("a", 70):  strings.Repeat("a", 63),
	} {
		if got := ProjectName(in); got != want {
			t.Errorf("ProjectName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseSynchronization(t *testing.T) {
	for spec, want := range map[string]Synchronization{
		"":                   {Kind: SyncNone},
		"none":               {Kind: SyncNone},
		":local":             {Kind: SyncLocal},
		"kubernetes://locks": {Kind: SyncKubernetes, Namespace: "locks"},
	} {
		got, err := ParseSynchronization("X", spec)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v", spec, got, err)
		}
		if spec != "" && got.String() != spec {
			t.Errorf("%q spells back as %q", spec, got.String())
		}
	}
	for _, bad := range []string{"local", "kubernetes://", "kubernetes://a/b", "consul://x"} {
		if _, err := ParseSynchronization("STAGEHAND_SYNCHRONIZATION", bad); err == nil || !strings.Contains(err.Error(), "STAGEHAND_SYNCHRONIZATION") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
