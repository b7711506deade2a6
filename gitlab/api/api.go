// Package api is stagehand's use of GitLab's REST API (v4) for cleanup:
// the repository's branches, tags and commits, and the project's container
// registry. It is a separate package from gitlab (the pure ci-env) so that
// the hooks do not link the API client; only stagehand-worker does.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"
)

// VarToken is the job variable with the token cleanup uses.
const VarToken = "STAGEHAND_CLEANUP_TOKEN"

// Client reads a project through the API. Pagination is followed to the
// end; 429 and 5xx answers (and connections refused) are retried, at most
// retries times, each after RetryWait, with a line in the trace.
type Client struct {
	gl      *gl.Client
	project string
	// Requests counts the API requests made.
	requests atomic.Int64
}

// Option changes how a Client reaches the API.
type Option func(*settings)

type settings struct {
	httpClient *http.Client
	trace      io.Writer
}

// WithHTTPClient makes the requests with c.
func WithHTTPClient(c *http.Client) Option { return func(s *settings) { s.httpClient = c } }

// WithTrace tells trace of every retry.
func WithTrace(trace io.Writer) Option { return func(s *settings) { s.trace = trace } }

// retries is how many times a request is made again.
const retries = 5

// New makes a client for project (its id or full path) at baseURL
// (CI_API_V4_URL) with a project or personal access token.
func New(baseURL, token, project string, opts ...Option) (*Client, error) {
	if token == "" {
		return nil, fmt.Errorf("no %s: cleanup needs a project or personal access token with the api scope (the job token may not delete registry tags); add it as a masked CI/CD variable", VarToken)
	}
	set := settings{httpClient: &http.Client{Timeout: 30 * time.Second}, trace: io.Discard}
	for _, o := range opts {
		o(&set)
	}
	c := &Client{project: project}
	counting := *set.httpClient
	base := counting.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	counting.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		c.requests.Add(1)
		return base.RoundTrip(r)
	})
	backoff := func(_, _ time.Duration, attempt int, resp *http.Response) time.Duration {
		wait := RetryWait(resp, attempt, time.Now())
		what, why := "a request", "no answer"
		if resp != nil {
			why = resp.Status
			if resp.Request != nil {
				what = resp.Request.Method + " " + resp.Request.URL.Path
			}
		}
		fmt.Fprintf(set.trace, "GitLab API: %s for %s; retrying in %s (attempt %d of %d)\n", why, what, wait.Round(10*time.Millisecond), attempt+2, retries+1)
		return wait
	}
	client, err := gl.NewClient(token, gl.WithBaseURL(baseURL), gl.WithHTTPClient(&counting),
		gl.WithCustomRetryMax(retries), gl.WithCustomBackoff(backoff))
	if err != nil {
		return nil, fmt.Errorf("GitLab API at %s: %w", baseURL, err)
	}
	c.gl = client
	return c, nil
}

// Bounds of RetryWait.
const (
	firstRetryWait = 500 * time.Millisecond
	maxRetryWait   = time.Minute
)

// RetryWait is how long to wait before making a request again after resp
// (nil: no answer) on the attempt-th retry (0 for the first): the time
// the answer's Retry-After asks for (seconds or an HTTP date); for a 429
// without one, until its RateLimit-Reset (Unix seconds); otherwise half a
// second, doubling with each attempt. Never more than a minute.
func RetryWait(resp *http.Response, attempt int, now time.Time) time.Duration {
	wait := firstRetryWait << min(attempt, 10)
	if resp != nil {
		if v := resp.Header.Get("Retry-After"); v != "" {
			if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
				wait = time.Duration(secs) * time.Second
			} else if at, err := http.ParseTime(v); err == nil {
				wait = max(at.Sub(now), 0)
			}
		} else if resp.StatusCode == http.StatusTooManyRequests {
			if reset, err := strconv.ParseInt(resp.Header.Get("RateLimit-Reset"), 10, 64); err == nil && reset > 0 {
				wait = max(time.Unix(reset, 0).Sub(now), 0)
			}
		}
	}
	return min(wait, maxRetryWait)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Requests is how many API requests the client made.
func (c *Client) Requests() int64 { return c.requests.Load() }

// explain turns refusals into what to do about them.
func explain(err error, what string) error {
	var er *gl.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		switch er.Response.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("%s: GitLab refused %s (401): it must be a valid project or personal access token with the api scope: %w", what, VarToken, err)
		case http.StatusForbidden:
			return fmt.Errorf("%s: GitLab forbids it to %s (403): the token needs the api scope and the Maintainer role on the project: %w", what, VarToken, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// IsRefused tells whether err is a 401/403 of the API.
func IsRefused(err error) bool {
	var er *gl.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && (er.Response.StatusCode == 401 || er.Response.StatusCode == 403)
}

func perPage() gl.ListOptions { return gl.ListOptions{PerPage: 100} }

// Branches lists the project's branch names.
func (c *Client) Branches(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	for b, err := range gl.Scan2(func(p gl.PaginationOptionFunc) ([]*gl.Branch, *gl.Response, error) {
		return c.gl.Branches.ListBranches(c.project, &gl.ListBranchesOptions{ListOptions: perPage()}, p, gl.WithContext(ctx))
	}) {
		if err != nil {
			return nil, explain(err, "list branches")
		}
		out[b.Name] = true
	}
	return out, nil
}

// Tags lists the project's git tag names.
func (c *Client) Tags(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	for t, err := range gl.Scan2(func(p gl.PaginationOptionFunc) ([]*gl.Tag, *gl.Response, error) {
		return c.gl.Tags.ListTags(c.project, &gl.ListTagsOptions{ListOptions: perPage()}, p, gl.WithContext(ctx))
	}) {
		if err != nil {
			return nil, explain(err, "list git tags")
		}
		out[t.Name] = true
	}
	return out, nil
}

// Commits tells which of the SHAs exist in the repository, with their
// commit times (8 requests at a time).
func (c *Client) Commits(ctx context.Context, shas []string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, sha := range shas {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			commit, resp, err := c.gl.Commits.GetCommit(c.project, sha, nil, gl.WithContext(ctx))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				var when time.Time
				if commit.CommittedDate != nil {
					when = *commit.CommittedDate
				}
				out[sha] = when
			case resp != nil && resp.StatusCode == http.StatusNotFound:
			default:
				if firstErr == nil {
					firstErr = explain(err, "read commit "+sha)
				}
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

// Repository is one container registry repository of the project.
type Repository struct {
	ID int64
	// Location is the full image name (registry/path).
	Location string
}

// Repositories lists the project's container registry repositories.
func (c *Client) Repositories(ctx context.Context) ([]Repository, error) {
	var out []Repository
	for r, err := range gl.Scan2(func(p gl.PaginationOptionFunc) ([]*gl.RegistryRepository, *gl.Response, error) {
		return c.gl.ContainerRegistry.ListProjectRegistryRepositories(c.project, &gl.ListProjectRegistryRepositoriesOptions{ListOptions: perPage()}, p, gl.WithContext(ctx))
	}) {
		if err != nil {
			return nil, explain(err, "list container registry repositories")
		}
		out = append(out, Repository{ID: r.ID, Location: r.Location})
	}
	return out, nil
}

// RepositoryTags lists a registry repository's tag names.
func (c *Client) RepositoryTags(ctx context.Context, repo int64) ([]string, error) {
	var out []string
	for t, err := range gl.Scan2(func(p gl.PaginationOptionFunc) ([]*gl.RegistryRepositoryTag, *gl.Response, error) {
		return c.gl.ContainerRegistry.ListRegistryRepositoryTags(c.project, repo, &gl.ListRegistryRepositoryTagsOptions{ListOptions: perPage()}, p, gl.WithContext(ctx))
	}) {
		if err != nil {
			return nil, explain(err, "list the tags of registry repository "+fmt.Sprint(repo))
		}
		out = append(out, t.Name)
	}
	return out, nil
}

// DeleteTag deletes one tag of a registry repository.
func (c *Client) DeleteTag(ctx context.Context, repo int64, tag string) error {
	resp, err := c.gl.ContainerRegistry.DeleteRegistryRepositoryTag(c.project, repo, tag, gl.WithContext(ctx))
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return nil // already gone
	}
	if err != nil {
		return explain(err, "delete tag "+tag)
	}
	return nil
}
