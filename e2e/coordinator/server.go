// Package coordinator is a fake GitLab coordinator for end-to-end tests: the
// real gitlab-runner (run-single) polls it for jobs, streams the job trace to
// it and reports the job's result, as it does with GitLab's /api/v4 jobs API.
//
// Only the runner-facing endpoints exist: POST /api/v4/jobs/request,
// PUT /api/v4/jobs/:id, PATCH /api/v4/jobs/:id/trace and
// POST /api/v4/jobs/:id/artifacts. Anything else gets 404 and is listed by
// Unhandled.
package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Job states as they appear in Result.State.
const (
	StatePending  = "pending"
	StateRunning  = "running"
	StateSuccess  = "success"
	StateFailed   = "failed"
	StateCanceled = "canceled"
)

// Result is a finished job as the coordinator saw it.
type Result struct {
	// State is the job's final state: "success", "failed", or "canceled"
	// when Cancel or Abort was called before the runner reported.
	State string
	// RunnerState is the state the runner PUT ("success" or "failed"); empty
	// for a job canceled before any runner took it.
	RunnerState   string
	FailureReason string
	ExitCode      int
	// Trace is the job log as received (raw, with timestamps and ANSI codes).
	Trace string
	// TraceComplete tells whether the checksum and byte size in the runner's
	// final PUT match Trace, i.e. no part of the log was lost.
	TraceComplete bool
}

// UploadedArtifact is one file received on the artifacts endpoint.
type UploadedArtifact struct {
	Filename string
	Type     string // artifact_type query parameter ("archive", ...)
	Format   string // artifact_format query parameter ("zip", ...)
	ExpireIn string
	Size     int64
	Data     []byte
}

// Option configures a Server.
type Option func(*Server)

// WithUpdateInterval sets X-GitLab-Trace-Update-Interval (seconds, default
// 1): how often the runner sends the trace.
func WithUpdateInterval(seconds int) Option {
	return func(s *Server) { s.interval = seconds }
}

// WithFailureReasons replaces features.failure_reasons (default
// DefaultFailureReasons).
func WithFailureReasons(reasons []string) Option {
	return func(s *Server) { s.reasons = reasons }
}

// WithLogf logs every request with f (for example t.Logf; close the server
// before the test ends).
func WithLogf(f func(format string, args ...any)) Option {
	return func(s *Server) { s.logf = f }
}

// Server is the fake coordinator. It is safe for concurrent use; several
// runners may poll one Server.
type Server struct {
	interval int
	reasons  []string
	logf     func(string, ...any)

	ln     net.Listener
	srv    *http.Server
	url    string
	closed chan struct{}
	once   sync.Once

	mu          sync.Mutex
	queue       []*job
	jobs        map[int64]*job
	lastJob     int64
	lastProject int64
	projects    map[string]int64
	requests    []string
	unhandled   []string
}

type cancelMode int

const (
	cancelNone      cancelMode = iota
	cancelGraceful             // Job-Status: canceling
	cancelForcefull            // Job-Status: canceled
)

type job struct {
	id      int64
	token   string
	payload []byte

	state       string
	runnerState string
	cancel      cancelMode
	trace       []byte
	artifacts   []UploadedArtifact
	result      Result
	done        chan struct{}
	changed     chan struct{} // closed and replaced on every change
}

func (j *job) notify() {
	close(j.changed)
	j.changed = make(chan struct{})
}

func (j *job) final() bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// New starts a coordinator on 127.0.0.1 with a random port.
func New(opts ...Option) (*Server, error) {
	s := &Server{
		interval: 1,
		reasons:  DefaultFailureReasons,
		jobs:     map[int64]*job{},
		projects: map[string]int64{},
		closed:   make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.url = "http://" + ln.Addr().String()

	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v4/jobs/request", s.handleRequest)
	mux.HandleFunc("PUT /api/v4/jobs/{id}", s.handleUpdate)
	mux.HandleFunc("PATCH /api/v4/jobs/{id}/trace", s.handleTrace)
	mux.HandleFunc("POST /api/v4/jobs/{id}/artifacts", s.handleArtifacts)
	mux.HandleFunc("/", s.handleUnknown)
	s.srv = &http.Server{Handler: s.logRequests(mux)}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the base URL to give the runner with --url (no trailing slash).
func (s *Server) URL() string { return s.url }

// Close stops the server; pending Wait calls return an error.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closed)
		_ = s.srv.Close()
	})
}

// Enqueue queues a job; runners get queued jobs in FIFO order. The returned
// token is the job token (CI_JOB_TOKEN), random per job.
func (s *Server) Enqueue(j Job) (id int64, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastJob++
	id = s.lastJob
	token = newToken()
	project := j.Project
	if project == "" {
		project = "stagehand/sample"
	}
	pid, ok := s.projects[project]
	if !ok {
		s.lastProject++
		pid = s.lastProject
		s.projects[project] = pid
	}
	p, err := buildPayload(s.url, j, ids{job: id, pipeline: id, project: pid}, token, s.reasons)
	if err != nil {
		panic(err) // a test bug: a Job that cannot be described
	}
	body, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	jb := &job{
		id: id, token: token, payload: body, state: StatePending,
		done: make(chan struct{}), changed: make(chan struct{}),
	}
	s.jobs[id] = jb
	s.queue = append(s.queue, jb)
	return id, token
}

// Payload is the job JSON handed (or to be handed) to the runner.
func (s *Server) Payload(id int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		return append([]byte(nil), j.payload...)
	}
	return nil
}

// Wait blocks until the runner reports a final state for the job (or it is
// canceled before any runner took it), ctx ends or the server closes. On
// error the Result still holds the trace so far.
func (s *Server) Wait(ctx context.Context, id int64) (Result, error) {
	s.mu.Lock()
	j := s.jobs[id]
	s.mu.Unlock()
	if j == nil {
		return Result{}, fmt.Errorf("coordinator: no job %d", id)
	}
	select {
	case <-j.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return j.result, nil
	case <-ctx.Done():
		return Result{State: s.State(id), Trace: s.Trace(id)}, fmt.Errorf("coordinator: job %d: %w", id, ctx.Err())
	case <-s.closed:
		return Result{State: s.State(id), Trace: s.Trace(id)}, fmt.Errorf("coordinator: job %d: server closed", id)
	}
}

// WaitTrace blocks until the job's trace contains substr. It fails when the
// job finishes without it, ctx ends or the server closes.
func (s *Server) WaitTrace(ctx context.Context, id int64, substr string) error {
	for {
		s.mu.Lock()
		j := s.jobs[id]
		if j == nil {
			s.mu.Unlock()
			return fmt.Errorf("coordinator: no job %d", id)
		}
		found, final, changed := strings.Contains(string(j.trace), substr), j.final(), j.changed
		s.mu.Unlock()
		switch {
		case found:
			return nil
		case final:
			return fmt.Errorf("coordinator: job %d finished without %q in its trace", id, substr)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("coordinator: job %d: waiting for %q: %w", id, substr, ctx.Err())
		case <-s.closed:
			return fmt.Errorf("coordinator: job %d: server closed", id)
		}
	}
}

// State is the job's state: pending, running, success, failed or canceled.
func (s *Server) State(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		return j.state
	}
	return ""
}

// Trace is the trace received so far, raw.
func (s *Server) Trace(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		return string(j.trace)
	}
	return ""
}

// Artifacts lists the files uploaded for the job.
func (s *Server) Artifacts(id int64) []UploadedArtifact {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		return append([]UploadedArtifact(nil), j.artifacts...)
	}
	return nil
}

// Cancel cancels the job as GitLab does for a runner that supports graceful
// cancellation (every current runner): a queued job ends at once as
// "canceled"; for a running job every trace PATCH and job PUT reply carries
// Job-Status: canceling, upon which the runner stops the script (SIGTERM to
// the run_exec process group), still runs after_script and cleanup, and
// sends its final PUT; the job then ends as "canceled".
//
// The runner only learns of it from its next reply: a trace PATCH, sent
// every update interval (1 s) while the job prints, or its keep-alive PUT,
// sent once 30 s have passed since it last sent anything. A job that prints
// nothing may so run on for up to about 30 s after Cancel.
func (s *Server) Cancel(id int64) { s.cancel(id, cancelGraceful) }

// Abort is GitLab's force-cancel: replies carry Job-Status: canceled, which
// makes the runner abort the job at once (no after_script). Wait returns when
// the runner's final PUT arrives, with State "canceled".
func (s *Server) Abort(id int64) { s.cancel(id, cancelForcefull) }

func (s *Server) cancel(id int64, mode cancelMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil || j.final() {
		return
	}
	if j.state == StatePending {
		for i, q := range s.queue {
			if q == j {
				s.queue = append(s.queue[:i], s.queue[i+1:]...)
				break
			}
		}
		j.state = StateCanceled
		j.result = Result{State: StateCanceled, Trace: string(j.trace)}
		close(j.done)
		j.notify()
		return
	}
	if mode > j.cancel {
		j.cancel = mode
	}
	j.notify()
}

// Requests is the log of requests received, as "METHOD path" (no query).
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Unhandled lists the requests that got 404 because no endpoint matched.
func (s *Server) Unhandled() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unhandled...)
}

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line := r.Method + " " + r.URL.Path
		s.mu.Lock()
		s.requests = append(s.requests, line)
		s.mu.Unlock()
		if s.logf != nil {
			s.logf("coordinator: %s %s", line, r.Header.Get("Content-Range"))
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) handleUnknown(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.unhandled = append(s.unhandled, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	http.Error(w, `{"message":"404 Not Found"}`, http.StatusNotFound)
}

// handleRequest is POST /api/v4/jobs/request.
func (s *Server) handleRequest(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"message":"400 Bad request"}`, http.StatusBadRequest)
		return
	}
	if req.Token == "" {
		http.Error(w, `{"message":"403 Forbidden"}`, http.StatusForbidden)
		return
	}
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	j := s.queue[0]
	s.queue = s.queue[1:]
	j.state = StateRunning
	j.notify()
	body := j.payload
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(body)
}

// lookup finds the job named by the path and checks its Job-Token; it
// writes the error reply itself and returns nil then. Called with s.mu held.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, bodyToken string) *job {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	j := s.jobs[id]
	if err != nil || j == nil {
		http.Error(w, `{"message":"404 Not Found"}`, http.StatusNotFound)
		return nil
	}
	token := r.Header.Get("Job-Token")
	if token == "" {
		token = bodyToken
	}
	if token != j.token || j.state == StatePending {
		http.Error(w, `{"message":"403 Forbidden"}`, http.StatusForbidden)
		return nil
	}
	return j
}

// jobStatus is the Job-Status header value for a job.
func jobStatus(j *job) string {
	if j.final() {
		return j.state
	}
	switch j.cancel {
	case cancelGraceful:
		return "canceling"
	case cancelForcefull:
		return StateCanceled
	}
	return StateRunning
}

// handleUpdate is PUT /api/v4/jobs/:id.
func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token         string `json:"token"`
		State         string `json:"state"`
		FailureReason string `json:"failure_reason"`
		ExitCode      int    `json:"exit_code"`
		Checksum      string `json:"checksum"`
		Output        struct {
			Checksum string `json:"checksum"`
			Bytesize int    `json:"bytesize"`
		} `json:"output"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"message":"400 Bad request"}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.lookup(w, r, req.Token)
	if j == nil {
		return
	}
	if j.final() {
		w.Header().Set("Job-Status", j.state)
		w.WriteHeader(http.StatusOK)
		return
	}
	switch req.State {
	case StateRunning:
		j.runnerState = req.State
	case StateSuccess, StateFailed:
		j.runnerState = req.State
		j.state = req.State
		if j.cancel != cancelNone {
			j.state = StateCanceled
		}
		checksum := req.Output.Checksum
		if checksum == "" {
			checksum = req.Checksum
		}
		j.result = Result{
			State:         j.state,
			RunnerState:   req.State,
			FailureReason: req.FailureReason,
			ExitCode:      req.ExitCode,
			Trace:         string(j.trace),
			TraceComplete: checksum == fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(j.trace)) &&
				req.Output.Bytesize == len(j.trace),
		}
		close(j.done)
	default:
		http.Error(w, `{"message":"400 Bad request - state is invalid"}`, http.StatusBadRequest)
		return
	}
	j.notify()
	w.Header().Set("Job-Status", jobStatus(j))
	w.Header().Set("X-GitLab-Trace-Update-Interval", strconv.Itoa(s.interval))
	w.WriteHeader(http.StatusOK)
}

// handleTrace is PATCH /api/v4/jobs/:id/trace.
func (s *Server) handleTrace(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.lookup(w, r, "")
	if j == nil {
		return
	}
	if j.final() {
		w.Header().Set("Job-Status", j.state)
		http.Error(w, `{"message":"403 Forbidden - Job is not running"}`, http.StatusForbidden)
		return
	}
	startStr, _, ok := strings.Cut(r.Header.Get("Content-Range"), "-")
	start, err := strconv.Atoi(startStr)
	if !ok || err != nil {
		http.Error(w, `{"message":"400 Bad request - Content-Range"}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Job-Status", jobStatus(j))
	w.Header().Set("X-GitLab-Trace-Update-Interval", strconv.Itoa(s.interval))
	if j.cancel == cancelForcefull && start < len(j.trace) && start+len(body) > len(j.trace) {
		// After Abort the runner treats every reply as "job failed" and
		// never moves its offset, so it resends what it sent before: keep
		// only the new tail, so that the whole log is still recorded.
		body = body[len(j.trace)-start:]
		start = len(j.trace)
	}
	if start != len(j.trace) {
		w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.trace)))
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return
	}
	j.trace = append(j.trace, body...)
	j.notify()
	w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.trace)))
	w.WriteHeader(http.StatusAccepted)
}

// handleArtifacts is POST /api/v4/jobs/:id/artifacts.
func (s *Server) handleArtifacts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	j := s.lookup(w, r, "")
	s.mu.Unlock()
	if j == nil {
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		http.Error(w, `{"message":"400 Bad request - `+err.Error()+`"}`, http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	var got []UploadedArtifact
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			http.Error(w, `{"message":"400 Bad request - `+err.Error()+`"}`, http.StatusBadRequest)
			return
		}
		data, err := io.ReadAll(part)
		if err != nil {
			http.Error(w, `{"message":"400 Bad request - `+err.Error()+`"}`, http.StatusBadRequest)
			return
		}
		if part.FormName() != "file" {
			continue
		}
		got = append(got, UploadedArtifact{
			Filename: part.FileName(), Type: q.Get("artifact_type"), Format: q.Get("artifact_format"),
			ExpireIn: q.Get("expire_in"), Size: int64(len(data)), Data: data,
		})
	}
	if len(got) == 0 {
		http.Error(w, `{"message":"400 Bad request - file is missing"}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	j.artifacts = append(j.artifacts, got...)
	j.notify()
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, "{}")
}

func newToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "glcbt-" + hex.EncodeToString(b)
}
