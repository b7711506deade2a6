package gitlab

import (
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/twmb/murmur3"
)

const sha = "0123456789abcdef0123456789abcdef01234567"

func baseVars() map[string]string {
	return map[string]string{
		"CI_PROJECT_NAME":    "sample",
		"CI_PROJECT_URL":     "https://gitlab.example.com/group/sample",
		"CI_COMMIT_SHA":      sha,
		"CI_COMMIT_REF_NAME": "main",
		"CI_PIPELINE_ID":     "7",
		"CI_JOB_ID":          "42",
		"CI_REGISTRY_IMAGE":  "registry.example.com/group/sample",
	}
}

func with(kv ...string) map[string]string {
	v := baseVars()
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "<unset>" {
			delete(v, kv[i])
			continue
		}
		v[kv[i]] = kv[i+1]
	}
	return v
}

func defaultAnnotations() []Annotation {
	return []Annotation{
		{AnnotationGit, "https://gitlab.example.com/group/sample"},
		{AnnotationCommit, sha},
		{AnnotationPipelineURL, "https://gitlab.example.com/group/sample/-/pipelines/7"},
		{AnnotationJobURL, "https://gitlab.example.com/group/sample/-/jobs/42"},
	}
}

// werfHash is werf's hash suffix: murmur3 in hex, no leading zeros.
func werfHash(s string) string { return fmt.Sprintf("%x", murmur3.StringSum32(s)) }

func baseEnv() Env {
	return Env{
		DockerConfig:  "/tmp/job/docker",
		StagesStorage: "registry.example.com/group/sample/stages",
		ImagesRepo:    "registry.example.com/group/sample",
		TagStrategy:   TagStagesSignature,
		Annotations:   defaultAnnotations(),
		Policies: Policies{
			GitTag:          Policy{10, 30},
			GitCommit:       Policy{50, 30},
			StagesSignature: Policy{-1, -1},
		},
	}
}

func TestDeriveEnv(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		edit func(*Env)
	}{
		{"defaults", baseVars(), func(*Env) {}},
		{"no registry", with("CI_REGISTRY_IMAGE", "<unset>"), func(e *Env) {
			e.StagesStorage, e.ImagesRepo = "", ""
		}},
		{"environment", with("CI_ENVIRONMENT_SLUG", "review-feature-x"), func(e *Env) {
			e.Environment = "review-feature-x"
			e.Namespace = "sample-review-feature-x"
			e.Release = "sample-review-feature-x"
		}},
		{"long environment is cropped and hashed (werf's slug)", with("CI_ENVIRONMENT_SLUG", strings.Repeat("e", 60)), func(e *Env) {
			name := "sample-" + strings.Repeat("e", 60)
			h := werfHash(name)
			e.Environment = strings.Repeat("e", 60)
			e.Namespace = name[:63-len(h)-1] + "-" + h
			e.Release = name[:53-len(h)-1] + "-" + h
		}},
		{"project name with capitals", with("CI_PROJECT_NAME", "My_App", "CI_ENVIRONMENT_SLUG", "production"), func(e *Env) {
			e.Environment = "production"
			e.Namespace = "my-app-production-" + werfHash("My_App-production")
			e.Release = e.Namespace
		}},
		{"APP_NAMESPACE overrides", with("CI_ENVIRONMENT_SLUG", "production", "APP_NAMESPACE", "shop"), func(e *Env) {
			e.Environment = "production"
			e.Namespace = "shop"
			e.Release = "sample-production"
			e.NamespaceFrom, e.DerivedNamespace = VarAppNamespace, "sample-production"
		}},
		{"STAGEHAND_NAMESPACE wins over APP_NAMESPACE and KUBE_NAMESPACE", with("CI_ENVIRONMENT_SLUG", "production", "APP_NAMESPACE", "shop", VarNamespace, "store", VarKubeNamespace, "kube-ns"), func(e *Env) {
			e.Environment = "production"
			e.Namespace = "store"
			e.Release = "sample-production"
			e.NamespaceFrom, e.DerivedNamespace = VarNamespace, "sample-production"
		}},
		{"KUBE_NAMESPACE overrides", with("CI_ENVIRONMENT_SLUG", "production", VarKubeNamespace, "shop-prod"), func(e *Env) {
			e.Environment = "production"
			e.Namespace = "shop-prod"
			e.Release = "sample-production"
			e.NamespaceFrom, e.DerivedNamespace = VarKubeNamespace, "sample-production"
		}},
		{"tag-or-branch on a branch", with(VarTagStrategy, TagOrBranch, "CI_COMMIT_REF_NAME", "Feature/X"), func(e *Env) {
			e.TagStrategy = TagOrBranch
			e.TagGitBranch = "feature-x-" + werfHash("Feature/X")
		}},
		{"tag-or-branch keeps a valid tag (werf's DockerTag)", with(VarTagStrategy, TagOrBranch, "CI_COMMIT_TAG", "v1.0"), func(e *Env) {
			e.TagStrategy = TagOrBranch
			e.TagGitTag = "v1.0"
		}},
		{"tag-or-branch keeps Feature_Login", with(VarTagStrategy, TagOrBranch, "CI_COMMIT_REF_NAME", "Feature_Login"), func(e *Env) {
			e.TagStrategy = TagOrBranch
			e.TagGitBranch = "Feature_Login"
		}},
		{"a GitLab project name with a dot makes a label", with("CI_PROJECT_NAME", "docs.example", "CI_ENVIRONMENT_SLUG", "review"), func(e *Env) {
			e.Environment = "review"
			e.Namespace = "docs-example-review-" + werfHash("docs.example-review")
			e.Release = "docs.example-review"
		}},
		{"overrides of derived values", with(VarStagesStorage, "other/stages", VarImagesRepo, "other", VarEnv, "staging", VarRelease, "rel"), func(e *Env) {
			e.StagesStorage, e.ImagesRepo = "other/stages", "other"
			e.Environment, e.Namespace, e.Release = "staging", "sample-staging", "rel"
		}},
		{"pipeline and job URLs from GitLab", with("CI_PIPELINE_URL", "https://g/p/1", "CI_JOB_URL", "https://g/j/2"), func(e *Env) {
			e.Annotations[2].Value = "https://g/p/1"
			e.Annotations[3].Value = "https://g/j/2"
		}},
		{"project URL trailing slash", with("CI_PROJECT_URL", "http://gitlab.local/sample/"), func(e *Env) {
			e.Annotations = []Annotation{
				{AnnotationGit, "http://gitlab.local/sample"},
				{AnnotationCommit, sha},
				{AnnotationPipelineURL, "http://gitlab.local/sample/-/pipelines/7"},
				{AnnotationJobURL, "http://gitlab.local/sample/-/jobs/42"},
			}
		}},
		{"annotations override", with(VarAnnotations, "a=1,b=x%2Cy"), func(e *Env) {
			e.Annotations = []Annotation{{"a", "1"}, {"b", "x,y"}}
		}},
		{"policies override", with(VarGitTagStrategyLimit, "3", VarGitCommitStrategyExpiryDays, "-1", VarStagesSignatureLimit, "100"), func(e *Env) {
			e.Policies.GitTag.Limit = 3
			e.Policies.GitCommit.ExpiryDays = -1
			e.Policies.StagesSignature.Limit = 100
		}},
		{"sha256 repository", with("CI_COMMIT_SHA", strings.Repeat("ab", 32)), func(e *Env) {
			e.Annotations[1].Value = strings.Repeat("ab", 32)
		}},
		{"DOCKER_CONFIG override", with(VarDockerConfig, "/home/u/.docker"), func(e *Env) {
			e.DockerConfig = "/home/u/.docker"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DeriveEnv(Input{Vars: tt.vars, DockerConfig: "/tmp/job/docker"})
			if err != nil {
				t.Fatalf("DeriveEnv: %v", err)
			}
			want := baseEnv()
			tt.edit(&want)
			if want.NamespaceFrom == "" {
				want.DerivedNamespace = want.Namespace
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("DeriveEnv:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestDeriveEnvErrors(t *testing.T) {
	tests := []struct {
		vars    map[string]string
		varName string
		reason  string
	}{
		{with("CI_PROJECT_NAME", "<unset>"), "CI_PROJECT_NAME", "missing"},
		{with("CI_PROJECT_URL", "<unset>"), "CI_PROJECT_URL", "missing"},
		{with("CI_PROJECT_URL", "gitlab.example.com/x"), "CI_PROJECT_URL", "not an http(s) URL"},
		{with("CI_PROJECT_URL", "ftp://gitlab.example.com/x"), "CI_PROJECT_URL", "not an http(s) URL"},
		{with("CI_COMMIT_SHA", "<unset>"), "CI_COMMIT_SHA", "missing"},
		{with("CI_COMMIT_SHA", "abc123"), "CI_COMMIT_SHA", "not a full lowercase hex commit SHA"},
		{with("CI_COMMIT_SHA", strings.ToUpper(sha)), "CI_COMMIT_SHA", "not a full lowercase hex"},
		{with("CI_PIPELINE_ID", "x"), "CI_PIPELINE_ID", "not a positive integer"},
		{with("CI_JOB_ID", "0"), "CI_JOB_ID", "not a positive integer"},
		{with("CI_JOB_ID", "<unset>"), "CI_JOB_ID", "missing"},
		{with(VarTagStrategy, "latest"), VarTagStrategy, "not a tag strategy"},
		{with(VarTagStrategy, TagOrBranch, "CI_COMMIT_REF_NAME", "<unset>"), "CI_COMMIT_REF_NAME", "missing"},
		{with("APP_NAMESPACE", "Shop_1"), "APP_NAMESPACE", "not a valid namespace name"},
		{with(VarNamespace, strings.Repeat("n", 64)), VarNamespace, "not a valid namespace name"},
		{with(VarRelease, strings.Repeat("r", 54)), VarRelease, "not a valid Helm release name"},
		{with(VarAnnotations, "novalue"), VarAnnotations, "not key=value"},
		{with(VarAnnotations, "a=%zz"), VarAnnotations, "invalid URL escape"},
		{with(VarGitTagStrategyLimit, "ten"), VarGitTagStrategyLimit, "not a number"},
		{with(VarStagesSignatureExpiryDays, "-2"), VarStagesSignatureExpiryDays, "not a number of at least -1"},
	}
	for _, tt := range tests {
		_, err := DeriveEnv(Input{Vars: tt.vars})
		var ve *VarError
		if !errors.As(err, &ve) {
			t.Errorf("%s: got error %v, want a *VarError", tt.varName, err)
			continue
		}
		if ve.Name != tt.varName || !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), tt.varName) {
			t.Errorf("got %q (variable %s), want variable %s and %q", err, ve.Name, tt.varName, tt.reason)
		}
	}
}

func TestVarsOrderAndEmpties(t *testing.T) {
	env, err := DeriveEnv(Input{Vars: with("CI_REGISTRY_IMAGE", "<unset>", "CI_ENVIRONMENT_SLUG", "prod")})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range env.Vars() {
		names = append(names, v.Name)
	}
	want := []string{VarTagStrategy, VarEnv, VarNamespace, VarRelease, VarAnnotations,
		VarGitTagStrategyLimit, VarGitTagStrategyExpiryDays, VarGitCommitStrategyLimit,
		VarGitCommitStrategyExpiryDays, VarStagesSignatureLimit, VarStagesSignatureExpiryDays}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("Vars names = %v\nwant %v", names, want)
	}
}

func TestAnnotationsRoundTrip(t *testing.T) {
	in := []Annotation{{"a", "x,y"}, {"b", "100%"}, {"c", "p=q"}, {"d", ""}}
	s := FormatAnnotations(in)
	if s != "a=x%2Cy,b=100%25,c=p=q,d=" {
		t.Errorf("FormatAnnotations = %q", s)
	}
	out, err := ParseAnnotations(s)
	if err != nil || !reflect.DeepEqual(out, in) {
		t.Errorf("ParseAnnotations(%q) = %v, %v; want %v", s, out, err, in)
	}
}

// TestFormatExportsEvaluates runs the exports through a real shell, so the
// quoting is checked by what bash makes of it.
func TestFormatExportsEvaluates(t *testing.T) {
	vars := []Var{{"A", "plain"}, {"B", "it's $HOME `x` \"q\" \\n"}, {"C", "line1\nline2"}}
	script := FormatExports(vars) + `printf '%s|%s|%s' "$A" "$B" "$C"`
	out, err := exec.Command("bash", "-c", script).Output()
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	want := "plain|it's $HOME `x` \"q\" \\n|line1\nline2"
	if string(out) != want {
		t.Errorf("bash saw %q, want %q", out, want)
	}
}

func FuzzDeriveEnv(f *testing.F) {
	f.Add("sample", "review/x", "main", "")
	f.Add("My App", "", "Feature/ü", "v1")
	f.Add("", "-", "", "")
	f.Fuzz(func(t *testing.T, project, envSlug, ref, tag string) {
		vars := with("CI_PROJECT_NAME", project, "CI_ENVIRONMENT_SLUG", envSlug,
			"CI_COMMIT_REF_NAME", ref, "CI_COMMIT_TAG", tag, VarTagStrategy, TagOrBranch)
		env, err := DeriveEnv(Input{Vars: vars})
		if err != nil {
			var ve *VarError
			if !errors.As(err, &ve) || ve.Name == "" {
				t.Fatalf("error %v does not name a variable", err)
			}
			return
		}
		if env.Namespace != "" && !IsDNS1123Label(env.Namespace) {
			t.Fatalf("namespace %q is not a DNS-1123 label", env.Namespace)
		}
		if len(env.Release) > ReleaseSlugLimit {
			t.Fatalf("release %q too long", env.Release)
		}
		if len(env.TagGitBranch) > TagSlugLimit || len(env.TagGitTag) > TagSlugLimit {
			t.Fatalf("tag too long: %q %q", env.TagGitBranch, env.TagGitTag)
		}
		if envSlug != "" && env.Namespace == "" {
			t.Fatalf("environment %q gave no namespace", envSlug)
		}
	})
}

// TestWerfNaming: with the project's werf.yaml, an environment's names are
// werf 1.1's: its project:, its deploy: templates and slugs.
func TestWerfNaming(t *testing.T) {
	vars := with("CI_PROJECT_NAME", "GitLab-Name", "CI_ENVIRONMENT_SLUG", "review-login")
	for _, c := range []struct {
		name           string
		naming         Naming
		wantNS, wantRl string
		err            string
	}{
		{"werf.yaml's project", Naming{Project: "shop", NamespaceSlug: true, ReleaseSlug: true}, "shop-review-login", "shop-review-login", ""},
		{"deploy templates", Naming{Project: "shop", Namespace: "apps-[[ env ]]", Release: "[[ project ]]-[[ env ]]-v1", NamespaceSlug: true, ReleaseSlug: true}, "apps-review-login", "shop-review-login-v1", ""},
		{"slugged", Naming{Project: "shop", Namespace: "Shop_[[ env ]]", NamespaceSlug: true, ReleaseSlug: true}, "shop-review-login-" + werfHash("Shop_review-login"), "shop-review-login", ""},
		{"slug off, valid", Naming{Project: "shop", Namespace: "fixed-ns", Release: "fixed", NamespaceSlug: false, ReleaseSlug: false}, "fixed-ns", "fixed", ""},
		{"slug off, invalid", Naming{Project: "shop", Namespace: "Bad_NS", NamespaceSlug: false, ReleaseSlug: true, File: "werf.yaml"}, "", "", "werf.yaml deploy.namespace"},
		{"bad template", Naming{Project: "shop", Namespace: "[[ nope ]]", NamespaceSlug: true, ReleaseSlug: true, File: "werf.yaml"}, "", "", "werf.yaml deploy.namespace"},
	} {
		n := c.naming
		env, err := DeriveEnv(Input{Vars: vars, Naming: &n})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || env.Namespace != c.wantNS || env.Release != c.wantRl {
			t.Errorf("%s: %q %q %v, want %q %q", c.name, env.Namespace, env.Release, err, c.wantNS, c.wantRl)
		}
	}
	// Overrides still win.
	n := Naming{Project: "shop", NamespaceSlug: true, ReleaseSlug: true}
	env, err := DeriveEnv(Input{Vars: with("CI_ENVIRONMENT_SLUG", "production", VarNamespace, "store"), Naming: &n})
	if err != nil || env.Namespace != "store" || env.Release != "shop-production" {
		t.Errorf("override: %+v %v", env, err)
	}
}
