package stages

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"gitlab.com/stagehand/stagehand/config"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/plan"
	"gitlab.com/stagehand/stagehand/request"
)

func TestPublishTags(t *testing.T) {
	final := &plan.Stage{Signature: strings.Repeat("a", 56)}
	commit := strings.Repeat("c", 40)
	cases := []struct {
		name    string
		o       request.Build
		want    []string
		jobFail bool
	}{
		{"default is the stages signature, then the commit", request.Build{Commit: commit}, []string{final.Signature, commit}, false},
		{"stages-signature", request.Build{TagStrategy: gitlab.TagStagesSignature, Commit: commit}, []string{final.Signature, commit}, false},
		{"tag-or-branch", request.Build{TagStrategy: gitlab.TagOrBranch, RefSlug: "feature-x", Commit: commit}, []string{"feature-x", commit}, false},
		{"no commit known", request.Build{TagStrategy: gitlab.TagOrBranch, RefSlug: "main"}, []string{"main"}, false},
		{"tag-or-branch without a ref", request.Build{TagStrategy: gitlab.TagOrBranch, Commit: commit}, nil, true},
		{"unknown strategy", request.Build{TagStrategy: "latest", Commit: commit}, nil, true},
	}
	for _, c := range cases {
		got, err := PublishTags(c.o, final)
		if c.jobFail {
			if err == nil || fault.KindOf(err) != fault.KindJob {
				t.Errorf("%s: err = %v, want the job's fault", c.name, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: PublishTags = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

// TestPublicationRefs: the tags asked ahead are those the strategy gives
// without the plan (the commit's, the branch's), then, with it, every tag
// of every published image; artifacts are not published.
func TestPublicationRefs(t *testing.T) {
	commit := strings.Repeat("c", 40)
	images := []*config.Image{{Name: ""}, {Name: "backend"}, {Name: "assets", Artifact: true}}
	final := func(image string) *plan.Stage { return &plan.Stage{Signature: image + strings.Repeat("a", 50)} }
	str := func(refs []name.Tag) []string {
		var out []string
		for _, r := range refs {
			out = append(out, r.String())
		}
		return out
	}
	sigReq := request.Build{ImagesRepo: "reg.example/g/p", Commit: commit}
	if got, want := str(publicationRefs(sigReq, images, nil)), []string{"reg.example/g/p:" + commit, "reg.example/g/p/backend:" + commit}; !reflect.DeepEqual(got, want) {
		t.Errorf("before the plan, stages-signature: %v, want %v", got, want)
	}
	if got, want := str(publicationRefs(sigReq, images, final)), []string{
		"reg.example/g/p:" + strings.Repeat("a", 50), "reg.example/g/p:" + commit,
		"reg.example/g/p/backend:backend" + strings.Repeat("a", 50), "reg.example/g/p/backend:" + commit,
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("with the plan, stages-signature: %v, want %v", got, want)
	}
	branchReq := request.Build{ImagesRepo: "reg.example/g/p", Commit: commit, TagStrategy: gitlab.TagOrBranch, RefSlug: "main"}
	if got, want := str(publicationRefs(branchReq, images[:1], nil)), []string{"reg.example/g/p:main", "reg.example/g/p:" + commit}; !reflect.DeepEqual(got, want) {
		t.Errorf("before the plan, tag-or-branch: %v, want %v", got, want)
	}
	if got := publicationRefs(request.Build{ImagesRepo: "reg.example/g/p", TagStrategy: "latest"}, images, nil); len(got) != 0 {
		t.Errorf("an unknown strategy asks %v, want nothing (publish reports it)", got)
	}
}

func TestAnnotateKeepsTheManifestAndSortsKeys(t *testing.T) {
	in := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"sha256:1","size":1},"layers":[]}`)
	a, err := annotate(in, map[string]string{"b": "2", "a": "1"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := annotate(in, map[string]string{"a": "1", "b": "2"})
	if string(a) != string(b) {
		t.Errorf("the same annotations give different bytes:\n%s\n%s", a, b)
	}
	if !strings.Contains(string(a), `"annotations":{"a":"1","b":"2"}`) || !strings.Contains(string(a), `"layers":[]`) {
		t.Errorf("annotated manifest: %s", a)
	}
}

func TestGitListingRoundTripAndDiff(t *testing.T) {
	files := []plan.GitFile{
		{TreeEntry: plan.TreeEntry{Path: "a", Mode: plan.ModeFile, Blob: plan.BlobID([]byte("1"))}, Dest: "/app/a"},
		{TreeEntry: plan.TreeEntry{Path: "b c", Mode: plan.ModeExec, Blob: plan.BlobID([]byte("2"))}, Dest: "/app/b c"},
	}
	l, err := decodeListing(listingOf(files).encode())
	if err != nil || !reflect.DeepEqual(l, listingOf(files)) {
		t.Fatalf("round trip: %v %v", l, err)
	}
	now := []plan.GitFile{
		{TreeEntry: plan.TreeEntry{Path: "a", Mode: plan.ModeFile, Blob: plan.BlobID([]byte("changed"))}, Dest: "/app/a"},
		{TreeEntry: plan.TreeEntry{Path: "d", Mode: plan.ModeFile, Blob: plan.BlobID([]byte("new"))}, Dest: "/app/d"},
	}
	p := diffListing(l, now)
	if len(p.Write) != 2 || !reflect.DeepEqual(p.Remove, []string{"/app/b c"}) {
		t.Errorf("diff = %+v", p)
	}
	if !diffListing(listingOf(now), now).empty() {
		t.Error("a tree against its own listing is not an empty patch")
	}
}

// TestShellScript runs a stage's script with sh: removed git files go
// (quotes and all), commands run under -e, and a failing command is named
// on a line of its own.
func TestShellScript(t *testing.T) {
	dir := t.TempDir()
	gone := filepath.Join(dir, "it's gone")
	if err := os.WriteFile(gone, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", shellScript([]string{"echo one", "false", "echo never"}, []string{gone})).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "one\n") || strings.Contains(string(out), "never") {
		t.Errorf("-e: %v %q", err, out)
	}
	if !strings.Contains(string(out), failedMark+"false\n") {
		t.Errorf("the failing command is not named: %q", out)
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", gone, err)
	}
	out, err = exec.Command("sh", "-c", shellScript([]string{"echo ok", "cat <<EOF\nmulti\nEOF"}, nil)).CombinedOutput()
	if err != nil || strings.Contains(string(out), failedMark) || !strings.Contains(string(out), "multi") {
		t.Errorf("a script that succeeds: %v %q", err, out)
	}
}
