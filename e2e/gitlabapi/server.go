// Package gitlabapi is a fake of GitLab's REST API (v4) for cleanup tests:
// branches, tags and commits of one project, and its container registry
// backed by a real registry (deleting a tag through the API deletes it in
// the registry). JSON shapes, pagination headers (X-Page, X-Next-Page,
// X-Total-Pages, Link) and error bodies follow GitLab's documentation.
package gitlabapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Project is the fake's one project.
type Project struct {
	ID   int64
	Path string // group/name
	// Branches and Tags name what exists; Commits maps SHA to commit time.
	Branches []string
	Tags     []string
	Commits  map[string]time.Time
}

// Server is the fake API.
type Server struct {
	*httptest.Server
	// Token is the accepted PRIVATE-TOKEN; ReadOnlyToken may read but not
	// delete (403).
	Token, ReadOnlyToken string
	registry             string // host:port of the real registry
	mu                   sync.Mutex
	project              Project
	requests             atomic.Int64
	deleted              []string
	// listings are the last tag listing of each repository, for its later
	// pages.
	listings map[string][]any
	known    []repository
	deleting sync.Mutex
}

// New starts the fake for project, with its registry at registry.
func New(p Project, registry, token string) *Server {
	s := &Server{Token: token, ReadOnlyToken: token + "-read", registry: registry, project: p}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// APIURL is CI_API_V4_URL.
func (s *Server) APIURL() string { return s.URL + "/api/v4" }

// Requests counts the requests served.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Deleted lists the registry tags deleted through the API ("path:tag").
func (s *Server) Deleted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.deleted...)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	tok := r.Header.Get("PRIVATE-TOKEN")
	if tok == "" {
		tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	if tok != s.Token && tok != s.ReadOnlyToken {
		writeError(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	path := r.URL.EscapedPath()
	prefix := "/api/v4/projects/"
	if !strings.HasPrefix(path, prefix) {
		writeError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	rest := strings.TrimPrefix(path, prefix)
	id, rest, _ := strings.Cut(rest, "/")
	if pid, _ := url.PathUnescape(id); pid != s.project.Path && pid != strconv.FormatInt(s.project.ID, 10) {
		writeError(w, http.StatusNotFound, "404 Project Not Found")
		return
	}
	parts := strings.Split(rest, "/")
	switch {
	case r.Method == http.MethodGet && rest == "repository/branches":
		var items []any
		for _, b := range s.project.Branches {
			items = append(items, map[string]any{"name": b, "merged": false, "protected": b == "main", "default": b == "main"})
		}
		paginate(w, r, items)
	case r.Method == http.MethodGet && rest == "repository/tags":
		var items []any
		for _, t := range s.project.Tags {
			items = append(items, map[string]any{"name": t, "message": "", "protected": false})
		}
		paginate(w, r, items)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "repository" && parts[1] == "commits":
		when, ok := s.project.Commits[parts[2]]
		if !ok {
			writeError(w, http.StatusNotFound, "404 Commit Not Found")
			return
		}
		writeJSON(w, map[string]any{"id": parts[2], "short_id": parts[2][:8], "committed_date": when, "created_at": when, "title": "commit"})
	case r.Method == http.MethodGet && rest == "registry/repositories":
		repos, err := s.repositories()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		var items []any
		for _, rp := range repos {
			items = append(items, rp)
		}
		paginate(w, r, items)
	case len(parts) >= 4 && parts[0] == "registry" && parts[1] == "repositories" && parts[3] == "tags":
		s.repositoryTags(w, r, parts, tok)
	default:
		writeError(w, http.StatusNotFound, "404 Not Found")
	}
}

type repository struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	ProjectID int64     `json:"project_id"`
	Location  string    `json:"location"`
	CreatedAt time.Time `json:"created_at"`
}

// repository finds a repository by id, as of the last listing of the
// registry's catalog (listed again when the id is not known): a listing
// per request would read a catalog of every test's repositories for each
// page of tags.
func (s *Server) repository(id int64) (*repository, error) {
	s.mu.Lock()
	known := s.known
	s.mu.Unlock()
	for pass := 0; pass < 2; pass++ {
		for i := range known {
			if known[i].ID == id {
				return &known[i], nil
			}
		}
		if pass == 0 {
			var err error
			if known, err = s.repositories(); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// repositories are the registry's repositories under the project path.
func (s *Server) repositories() ([]repository, error) {
	out, err := s.listRepositories()
	if err == nil {
		s.mu.Lock()
		s.known = out
		s.mu.Unlock()
	}
	return out, err
}

func (s *Server) listRepositories() ([]repository, error) {
	var cat struct{ Repositories []string }
	next := "/v2/_catalog?n=1000"
	for next != "" {
		resp, err := http.Get("http://" + s.registry + next)
		if err != nil {
			return nil, err
		}
		var page struct{ Repositories []string }
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("registry catalog: %s %v", resp.Status, err)
		}
		cat.Repositories = append(cat.Repositories, page.Repositories...)
		// Link: </v2/_catalog?last=x&n=1000>; rel="next"
		next = ""
		if l := resp.Header.Get("Link"); l != "" {
			if i, j := strings.Index(l, "<"), strings.Index(l, ">"); i >= 0 && j > i {
				next = l[i+1 : j]
			}
		}
	}
	sort.Strings(cat.Repositories)
	var out []repository
	for _, name := range cat.Repositories {
		if name != s.project.Path && !strings.HasPrefix(name, s.project.Path+"/") {
			continue
		}
		// Ids stay put while other repositories come and go.
		h := fnv.New32a()
		h.Write([]byte(name))
		out = append(out, repository{ID: int64(h.Sum32()), Name: strings.TrimPrefix(strings.TrimPrefix(name, s.project.Path), "/"),
			Path: name, ProjectID: s.project.ID, Location: s.registry + "/" + name, CreatedAt: time.Unix(0, 0).UTC()})
	}
	return out, nil
}

func (s *Server) repositoryTags(w http.ResponseWriter, r *http.Request, parts []string, tok string) {
	id, _ := strconv.ParseInt(parts[2], 10, 64)
	repo, err := s.repository(id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if repo == nil {
		writeError(w, http.StatusNotFound, "404 Repository Not Found")
		return
	}
	switch {
	case r.Method == http.MethodGet && len(parts) == 4:
		items, err := s.tagPages(repo, r.URL.Query().Get("page"))
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		paginate(w, r, items)
	case r.Method == http.MethodDelete && len(parts) == 5:
		if tok != s.Token {
			writeError(w, http.StatusForbidden, "403 Forbidden")
			return
		}
		tag, _ := url.PathUnescape(parts[4])
		if err := s.deleteTag(repo.Path, tag); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		s.mu.Lock()
		s.deleted = append(s.deleted, repo.Path+":"+tag)
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	default:
		writeError(w, http.StatusMethodNotAllowed, "405 Method Not Allowed")
	}
}

// tagPages answers a repository's tags as list items. The first page
// lists the registry afresh; later pages of the same listing read that
// listing (as a database-backed API would page one query), so that
// paging through ten thousand tags does not list them a hundred times.
func (s *Server) tagPages(repo *repository, page string) ([]any, error) {
	s.mu.Lock()
	items, ok := s.listings[repo.Path]
	s.mu.Unlock()
	if ok && page != "" && page != "1" {
		return items, nil
	}
	resp, err := http.Get("http://" + s.registry + "/v2/" + repo.Path + "/tags/list")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var list struct{ Tags []string }
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			return nil, fmt.Errorf("registry tags of %s: %w", repo.Path, err)
		}
	}
	sort.Strings(list.Tags)
	items = make([]any, 0, len(list.Tags))
	for _, t := range list.Tags {
		items = append(items, map[string]any{"name": t, "path": repo.Path + ":" + t, "location": repo.Location + ":" + t})
	}
	s.mu.Lock()
	if s.listings == nil {
		s.listings = map[string][]any{}
	}
	s.listings[repo.Path] = items
	s.mu.Unlock()
	return items, nil
}

// deleteTag removes one tag in the real registry, whose API deletes only
// manifests (and every tag on one): as GitLab does for such registries,
// the tag is first moved to a manifest of its own, which is then deleted.
func (s *Server) deleteTag(repo, tag string) error {
	// One at a time: the registry's manifest DELETE looks up the tags to
	// remove while other requests move tags, and may then miss one (seen
	// here: a tag left pointing at its deleted dummy). GitLab's own
	// registry deletes tags by name and has no such race.
	s.deleting.Lock()
	defer s.deleting.Unlock()
	req, _ := http.NewRequest(http.MethodHead, "http://"+s.registry+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	digest, err := s.putDummy(repo, tag)
	if err != nil {
		return err
	}
	req, _ = http.NewRequest(http.MethodDelete, "http://"+s.registry+"/v2/"+repo+"/manifests/"+digest, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("registry DELETE %s@%s: %s", repo, digest, resp.Status)
	}
	return nil
}

// dummyConfig is the config blob of the dummy manifests deleteTag puts.
const dummyConfig = `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}`

// putDummy points tag at a manifest no other tag has, and answers its
// digest.
func (s *Server) putDummy(repo, tag string) (string, error) {
	sum := sha256.Sum256([]byte(dummyConfig))
	cfg := "sha256:" + hex.EncodeToString(sum[:])
	head, err := http.Head("http://" + s.registry + "/v2/" + repo + "/blobs/" + cfg)
	if err != nil {
		return "", err
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK {
		if _, err := PushBlob(s.registry, repo, []byte(dummyConfig)); err != nil {
			return "", err
		}
	}
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
		"config": map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": len(dummyConfig)},
		"layers": []any{}, "annotations": map[string]string{"gitlab.fake/deleting": repo + ":" + tag + " " + strconv.FormatInt(time.Now().UnixNano(), 10)},
	})
	req, _ := http.NewRequest(http.MethodPut, "http://"+s.registry+"/v2/"+repo+"/manifests/"+url.PathEscape(tag), bytes.NewReader(m))
	req.Header.Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("registry PUT dummy manifest on %s:%s: %s", repo, tag, resp.Status)
	}
	d := sha256.Sum256(m)
	return "sha256:" + hex.EncodeToString(d[:]), nil
}

// PushBlob uploads a blob to repo of the registry at host:port in one
// request and answers its digest.
func PushBlob(registry, repo string, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	resp, err := http.Post("http://"+registry+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = "http://" + registry + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+digest, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("registry blob upload to %s: %s", repo, resp.Status)
	}
	return digest, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// paginate answers one page of items with GitLab's headers.
func paginate(w http.ResponseWriter, r *http.Request, items []any) {
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	if page < 1 {
		page = 1
	}
	per, _ := strconv.Atoi(q.Get("per_page"))
	if per < 1 {
		per = 20
	}
	if per > 100 {
		per = 100
	}
	total := len(items)
	pages := (total + per - 1) / per
	if pages == 0 {
		pages = 1
	}
	start := min((page-1)*per, total)
	end := min(start+per, total)
	h := w.Header()
	h.Set("X-Page", strconv.Itoa(page))
	h.Set("X-Per-Page", strconv.Itoa(per))
	h.Set("X-Total", strconv.Itoa(total))
	h.Set("X-Total-Pages", strconv.Itoa(pages))
	link := func(p int, rel string) string {
		u := *r.URL
		qq := u.Query()
		qq.Set("page", strconv.Itoa(p))
		qq.Set("per_page", strconv.Itoa(per))
		u.RawQuery = qq.Encode()
		return fmt.Sprintf("<http://%s%s>; rel=\"%s\"", r.Host, u.String(), rel)
	}
	links := []string{link(1, "first"), link(pages, "last")}
	if page < pages {
		h.Set("X-Next-Page", strconv.Itoa(page+1))
		links = append(links, link(page+1, "next"))
	} else {
		h.Set("X-Next-Page", "")
	}
	if page > 1 {
		h.Set("X-Prev-Page", strconv.Itoa(page-1))
		links = append(links, link(page-1, "prev"))
	}
	h.Set("Link", strings.Join(links, ", "))
	page_ := items[start:end]
	if page_ == nil {
		page_ = []any{}
	}
	writeJSON(w, page_)
}
