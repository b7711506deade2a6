package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"gitlab.com/stagehand/stagehand/cleanup"
	"gitlab.com/stagehand/stagehand/e2e/gitlabapi"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/stages"
	"gitlab.com/stagehand/stagehand/stagesrepo"
)

// pushBlob uploads a blob to repo in one request and answers its digest.
func pushBlob(b *testing.B, repo string, data []byte) string {
	digest, err := gitlabapi.PushBlob(h.Registry, repo, data)
	if err != nil {
		b.Fatal(err)
	}
	return digest
}

// vmHWM is the process's peak resident set, from /proc.
func vmHWM() string { return fmt.Sprintf("%d kB", vmHWMKB()) }

func vmHWMKB() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// putManifest puts a manifest under a tag of repo.
func putManifest(repo, tag string, m []byte) error {
	req, _ := http.NewRequest(http.MethodPut, "http://"+h.Registry+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(m))
	req.Header.Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT %s:%s: %s", repo, tag, resp.Status)
	}
	return nil
}

// countingTransport counts the requests it carries.
func countingTransport(n *atomic.Int64) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		n.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkCleanupPlan (P5): the plan for 10,000 published tags, 2,000
// branches and 50,000 commits, through the fake GitLab API and the real
// registry (manifests only). Goal: under 2 s and 200 MB RSS.
func BenchmarkCleanupPlan(b *testing.B) {
	project := fmt.Sprintf("stagehand/p5-%d", time.Now().UnixNano())
	now := time.Now().UTC()
	cfg := pushBlob(b, project, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}`))

	const nTags, nBranches, nCommits = 10000, 2000, 50000
	commitSHA := func(i int) string { return fmt.Sprintf("%040x", i+1) }
	p := gitlabapi.Project{ID: 5, Path: project, Commits: map[string]time.Time{}}
	for i := 0; i < nBranches; i++ {
		p.Branches = append(p.Branches, fmt.Sprintf("feature-%04d", i))
	}
	for i := 0; i < 50; i++ {
		p.Tags = append(p.Tags, fmt.Sprintf("v%d", i))
	}
	for i := 0; i < nCommits; i++ {
		p.Commits[commitSHA(i)] = now.Add(-time.Duration(i) * time.Minute)
	}
	api := gitlabapi.New(p, h.Registry, "glpat-bench")
	defer api.Close()

	// 10,000 tags: 6,000 commit images, 3,000 branch images (a third of
	// them of gone branches), 1,000 git tag images, each with the
	// publication record stagehand writes; 500 stages with their edge
	// records.
	repo := h.Registry + "/" + project
	stagesRepo := repo + "/stages"
	type tag struct {
		name  string
		kind  stagesrepo.PublicationKind
		final string
		ann   map[string]string
	}
	stageSig := func(i int) string { return fmt.Sprintf("%056x", i%500+1) }
	var tags []tag
	for i := 0; i < nTags; i++ {
		c := i * 5 % (nCommits + 5000) // some commits are gone
		ann := map[string]string{stagesrepo.AnnotationCommit: commitSHA(c), stagesrepo.AnnotationCommitTime: now.Add(-time.Duration(c) * time.Minute).Format(time.RFC3339),
			stagesrepo.AnnotationStages: stageSig(i), stagesrepo.AnnotationStage: fmt.Sprintf("%s-%d", stageSig(i), now.Add(-3*time.Hour).UnixMilli())}
		tg := tag{name: commitSHA(c), kind: stagesrepo.PublishedCommit, final: stageSig(i), ann: ann}
		switch {
		case i < 6000:
		case i < 9000:
			br := fmt.Sprintf("feature-%04d", (i-6000)*2/3)
			if i%3 == 0 {
				br = fmt.Sprintf("gone-%04d", i)
			}
			tg.name, tg.kind, ann[stagesrepo.AnnotationRef], ann[stagesrepo.AnnotationRefKind] = br, stagesrepo.PublishedBranch, br, "branch"
		default:
			gt := fmt.Sprintf("v%d", i-9000)
			tg.name, tg.kind, ann[stagesrepo.AnnotationRef], ann[stagesrepo.AnnotationRefKind] = gt, stagesrepo.PublishedGitTag, gt, "tag"
		}
		tags = append(tags, tg)
	}
	start := time.Now()
	stagesRef, err := name.NewRepository(stagesRepo)
	if err != nil {
		b.Fatal(err)
	}
	var setup []func() error
	for _, tg := range tags {
		setup = append(setup, func() error {
			if err := stages.WriteRecord(context.Background(), stagesRef, stagesrepo.PublicationRecord(tg.kind, repo, tg.name, tg.final), nil); err != nil {
				return err
			}
			m, _ := json.Marshal(map[string]any{
				"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
				"config": map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 91},
				"layers": []any{}, "annotations": tg.ann,
			})
			return putManifest(project, tg.name, m)
		})
	}
	stageCfg := pushBlob(b, project+"/stages", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}`))
	for j := 0; j < 500; j++ {
		setup = append(setup, func() error {
			if err := stages.WriteRecord(context.Background(), stagesRef, stagesrepo.EdgeRecord(stageSig(j), ""), nil); err != nil {
				return err
			}
			m, _ := json.Marshal(map[string]any{
				"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
				"config": map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "digest": stageCfg, "size": 91},
				"layers": []any{}, "annotations": map[string]string{"stage": stageSig(j)},
			})
			return putManifest(project+"/stages", fmt.Sprintf("%s-%d", stageSig(j), now.Add(-3*time.Hour).UnixMilli()), m)
		})
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var failed error
	var mu sync.Mutex
	for _, do := range setup {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := do(); err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
	b.Logf("set up %d tags, their records and 500 stages in %s", len(tags), time.Since(start).Round(time.Millisecond))

	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		apiBefore := api.Requests()
		t0 := time.Now()
		var registryRequests atomic.Int64
		rep, err := cleanup.Run(context.Background(), request.Cleanup{
			APIURL: api.APIURL(), Token: "glpat-bench", Project: project, StagesStorage: stagesRepo,
			Cluster: request.Cluster{Kubeconfig: h.Kubeconfig}, DryRun: true,
			Policies: gitlab.Policies{GitCommit: gitlab.Policy{Limit: 50, ExpiryDays: 30}, StagesSignature: gitlab.Policy{Limit: -1, ExpiryDays: -1}},
		}, &phases{}, cleanup.WithNow(now), cleanup.WithTransport(countingTransport(&registryRequests)))
		took := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("P5 plan: %d tags (%d to delete), %d branches, %d commits: %s, %d GitLab API requests, %d registry requests, peak RSS %s\n",
			len(rep.Plan.Tags), len(rep.Plan.Deleted()), nBranches, nCommits, took.Round(time.Millisecond), api.Requests()-apiBefore, registryRequests.Load(), vmHWM())
		b.ReportMetric(took.Seconds(), "plan-s")
		b.ReportMetric(float64(api.Requests()-apiBefore), "api-requests")
		if len(rep.Plan.Tags) != nTags {
			b.Errorf("planned %d tags, want %d", len(rep.Plan.Tags), nTags)
		}
		if took > 2*time.Second {
			b.Errorf("the plan took %s, the goal is under 2 s", took.Round(time.Millisecond))
		}
		if kb := vmHWMKB(); kb > 200*1024 {
			b.Errorf("peak RSS %d kB, the goal is under 200 MB", kb)
		}
	}
}

// phases prints the cleanup's "Found ..." line, which times its phases.
type phases struct{}

func (phases) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("Found ")) {
		os.Stdout.Write(p)
	}
	return len(p), nil
}
