package api_test

import (
	"context"
	"fmt"
	"strings"
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
	if err != nil || !commits[shas[0]] || commits[shas[1]] {
		t.Fatalf("commits: %v %v", commits, err)
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
