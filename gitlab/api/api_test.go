package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/e2e/gitlabapi"
	"gitlab.com/stagehand/stagehand/gitlab/api"
)

func fake(t *testing.T) *gitlabapi.Server {
	p := gitlabapi.Project{ID: 7, Path: "group/shop", Commits: map[string]time.Time{}}
	for i := 0; i < 250; i++ {
		p.Branches = append(p.Branches, fmt.Sprintf("feature-%03d", i))
	}
	p.Tags = []string{"v1", "v2"}
	for i := 0; i < 30; i++ {
		p.Commits[fmt.Sprintf("%040d", i)] = time.Unix(int64(i), 0)
	}
	s := gitlabapi.New(p, "127.0.0.1:1", "glpat-right")
	t.Cleanup(s.Close)
	return s
}

func TestClientFollowsPaginationAndAnswersExistence(t *testing.T) {
	s := fake(t)
	c, err := api.New(s.APIURL(), "glpat-right", "group/shop", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	branches, err := c.Branches(ctx)
	if err != nil || len(branches) != 250 || !branches["feature-249"] {
		t.Fatalf("branches: %d, %v", len(branches), err)
	}
	if n := c.Requests(); n != 3 {
		t.Errorf("250 branches took %d requests, want 3 pages of 100", n)
	}
	tags, err := c.Tags(ctx)
	if err != nil || len(tags) != 2 {
		t.Fatalf("tags: %v %v", tags, err)
	}
	shas := []string{fmt.Sprintf("%040d", 3), fmt.Sprintf("%040d", 99)}
	commits, err := c.Commits(ctx, shas)
	if err != nil || len(commits) != 1 {
		t.Fatalf("commits: %v %v", commits, err)
	}
	if when, ok := commits[shas[0]]; !ok || when.IsZero() {
		t.Errorf("commit %s: %v %v, want its commit time", shas[0], when, ok)
	}
}

func TestClientExplainsRefusals(t *testing.T) {
	s := fake(t)
	c, _ := api.New(s.APIURL(), "glpat-wrong", "group/shop", nil)
	_, err := c.Branches(context.Background())
	if err == nil || !strings.Contains(err.Error(), "STAGEHAND_CLEANUP_TOKEN") || !strings.Contains(err.Error(), "api scope") || !api.IsRefused(err) {
		t.Errorf("a wrong token: %v", err)
	}
	if _, err := api.New(s.APIURL(), "", "group/shop", nil); err == nil || !strings.Contains(err.Error(), "STAGEHAND_CLEANUP_TOKEN") {
		t.Errorf("no token: %v", err)
	}
}

// TestClientRetriesTooManyRequests: a 429 with Retry-After and a 502 are
// retried, after the time the server asked for.
func TestClientRetriesTooManyRequests(t *testing.T) {
	s := fake(t)
	target, _ := url.Parse(s.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var calls atomic.Int32
	var retried time.Time
	var first time.Time
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"message":"429 Too Many Requests"}`)
		case 2:
			w.WriteHeader(http.StatusBadGateway)
		default:
			if retried.IsZero() {
				retried = time.Now()
			}
			proxy.ServeHTTP(w, r)
		}
	}))
	defer flaky.Close()
	c, err := api.New(flaky.URL+"/api/v4", "glpat-right", "group/shop", nil)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := c.Tags(context.Background())
	if err != nil || len(tags) != 2 {
		t.Fatalf("tags after a 429 and a 502: %v %v", tags, err)
	}
	if wait := retried.Sub(first); wait < time.Second {
		t.Errorf("retried %s after a 429 with Retry-After: 1", wait)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d calls, want 3", n)
	}
}
