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
	c, err := api.New(s.APIURL(), "glpat-right", "group/shop")
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
	c, _ := api.New(s.APIURL(), "glpat-wrong", "group/shop")
	_, err := c.Branches(context.Background())
	if err == nil || !strings.Contains(err.Error(), "STAGEHAND_CLEANUP_TOKEN") || !strings.Contains(err.Error(), "api scope") || !api.IsRefused(err) {
		t.Errorf("a wrong token: %v", err)
	}
	if _, err := api.New(s.APIURL(), "", "group/shop"); err == nil || !strings.Contains(err.Error(), "STAGEHAND_CLEANUP_TOKEN") {
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
	c, err := api.New(flaky.URL+"/api/v4", "glpat-right", "group/shop")
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

func TestRetryWait(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	answer := func(status int, headers ...string) *http.Response {
		r := &http.Response{StatusCode: status, Header: http.Header{}}
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Set(headers[i], headers[i+1])
		}
		return r
	}
	for _, c := range []struct {
		name    string
		resp    *http.Response
		attempt int
		want    time.Duration
	}{
		{"429 Retry-After seconds", answer(429, "Retry-After", "2"), 0, 2 * time.Second},
		{"503 Retry-After seconds", answer(503, "Retry-After", "2"), 3, 2 * time.Second},
		{"Retry-After wins over RateLimit-Reset", answer(429, "Retry-After", "3", "RateLimit-Reset", fmt.Sprint(now.Add(20*time.Second).Unix())), 0, 3 * time.Second},
		{"Retry-After HTTP date", answer(429, "Retry-After", now.Add(7*time.Second).Format(http.TimeFormat)), 0, 7 * time.Second},
		{"Retry-After date in the past", answer(503, "Retry-After", now.Add(-time.Hour).Format(http.TimeFormat)), 0, 0},
		{"Retry-After bounded", answer(429, "Retry-After", "3600"), 0, time.Minute},
		{"429 RateLimit-Reset", answer(429, "RateLimit-Reset", fmt.Sprint(now.Add(5*time.Second).Unix())), 0, 5 * time.Second},
		{"429 without headers", answer(429), 1, time.Second},
		{"502 first retry", answer(502), 0, 500 * time.Millisecond},
		{"502 third retry", answer(502), 2, 2 * time.Second},
		{"no answer", nil, 1, time.Second},
		{"malformed Retry-After", answer(503, "Retry-After", "soon"), 0, 500 * time.Millisecond},
		{"many retries bounded", nil, 40, time.Minute},
	} {
		if got := api.RetryWait(c.resp, c.attempt, now); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// TestRetryAfterIsHonoured: a 429 and then a 503, each with Retry-After:
// 2, are retried two seconds later each (not after the client library's
// own jitter), and each retry is a line of the trace.
func TestRetryAfterIsHonoured(t *testing.T) {
	s := fake(t)
	target, _ := url.Parse(s.APIURL())
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	var calls atomic.Int32
	var times [3]time.Time
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n <= 3 {
			times[n-1] = time.Now()
		}
		switch n {
		case 1:
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	defer flaky.Close()
	var trace strings.Builder
	c, err := api.New(flaky.URL+"/api/v4", "glpat-right", "group/shop", api.WithTrace(&trace))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tags(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, what := range []string{"429", "503"} {
		wait := times[i+1].Sub(times[i])
		t.Logf("retried %s after a %s with Retry-After: 2", wait.Round(time.Millisecond), what)
		if wait < 2*time.Second || wait > 2500*time.Millisecond {
			t.Errorf("retried %s after a %s with Retry-After: 2", wait, what)
		}
	}
	lines := strings.Count(trace.String(), "retrying in 2s")
	if lines != 2 || !strings.Contains(trace.String(), "429 Too Many Requests for GET /api/v4/projects/") {
		t.Errorf("trace:\n%s", trace.String())
	}
}
