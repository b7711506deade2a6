// Package worker is the protocol between stagehand's light half (the
// hooks gitlab-runner starts for every stage of every job, and the
// operator commands) and its heavy half, the stagehand-worker program,
// which links the Docker Engine client, go-containerregistry, Helm and
// client-go. Only the two ends import it, as gitlab-runner's
// executors/custom/api is imported by the runner and its executors.
//
// Why two programs: gitlab-runner starts a hook process for every stage of
// every job, so the hooks' start-up time is paid many times per job.
// Linking the heavy libraries into the hooks would multiply their start-up
// time for jobs that never touch an engine or a cluster. A third program,
// stagehand-config, serves the same protocol for what needs werf's
// template functions and nothing heavy (a project's names, `stagehand
// plan`, `stagehand config render`): it starts in a fraction of the
// worker's time.
//
// The protocol: one Request as JSON on the worker's stdin — an operation's
// name and its body, one of package request's types; progress on the
// worker's stdout and stderr, which are the job trace; one Response as
// JSON on file descriptor 3 — the operation's result, or why it failed and
// whose fault that was. SIGTERM asks the worker to stop what it does (a
// cancelled job); it still answers.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"gitlab.com/stagehand/stagehand/fault"
)

// Program is the worker's file name, looked for next to stagehand.
const Program = "stagehand-worker"

// Operation is a request's body: it names its operation.
type Operation interface {
	Op() string
}

// ProgramOf is the program that serves an operation. The heavy half is
// several programs, each linking only what its operations need (each
// start pays for the libraries it links): an operation with a Program
// method is served by that program, the others by Program.
func ProgramOf(op Operation) string {
	if p, ok := op.(interface{ Program() string }); ok {
		return p.Program()
	}
	return Program
}

// Request is one piece of work.
type Request struct {
	Op   string          `json:"op"`
	Body json.RawMessage `json:"body"`
}

// Response is the outcome of a request.
type Response struct {
	// Body is the operation's result.
	Body json.RawMessage `json:"body,omitempty"`
	// Error, when not empty, is why the work failed; JobFault tells
	// whether the job is to blame.
	Error    string `json:"error,omitempty"`
	JobFault bool   `json:"job_fault,omitempty"`
	// Stopped says the work was stopped by SIGTERM.
	Stopped bool `json:"stopped,omitempty"`
}

// Handler does one operation: it decodes its body and answers its result.
// Its error's fault kind goes back to the caller.
type Handler func(ctx context.Context, body json.RawMessage, trace io.Writer) (any, error)

// Handlers are the operations a worker serves, by name.
type Handlers map[string]Handler

// Handle registers fn as the handler of In's operation.
func Handle[In Operation, Out any](h Handlers, fn func(ctx context.Context, in In, trace io.Writer) (Out, error)) {
	var zero In
	h[zero.Op()] = func(ctx context.Context, body json.RawMessage, trace io.Writer) (any, error) {
		var in In
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, fmt.Errorf("%s request: %w", zero.Op(), err)
		}
		return fn(ctx, in, trace)
	}
}

// resultFD is where the worker writes its Response.
const resultFD = 3

// Serve is the worker program's main: it reads the request, runs its
// handler until done or SIGTERM, and writes the response. It returns the
// process exit status.
func Serve(handlers Handlers, stdin io.Reader, trace io.Writer) int {
	result := os.NewFile(resultFD, "result")
	if result == nil {
		fmt.Fprintf(trace, "%s is started by stagehand, not by hand\n", Program)
		return 2
	}
	defer result.Close()
	resp := serve(handlers, stdin, trace)
	if err := json.NewEncoder(result).Encode(resp); err != nil {
		fmt.Fprintf(trace, "%s: write result: %v\n", Program, err)
		return 2
	}
	return 0
}

func serve(handlers Handlers, stdin io.Reader, trace io.Writer) Response {
	var req Request
	if err := json.NewDecoder(stdin).Decode(&req); err != nil {
		return Response{Error: fmt.Sprintf("%s: read request: %v", Program, err)}
	}
	h, ok := handlers[req.Op]
	if !ok {
		return Response{Error: fmt.Sprintf("%s: unknown operation %q (stagehand and %s are from different versions?)", Program, req.Op, Program)}
	}
	// The runner stops a cancelled job's hooks with SIGTERM (and ^C reaches
	// a worker run by hand as SIGINT); the handler sees it as ctx's end.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	out, err := h(ctx, req.Body, trace)
	var resp Response
	if out != nil {
		body, merr := json.Marshal(out)
		if merr != nil && err == nil {
			err = fmt.Errorf("%s result: %w", req.Op, merr)
		}
		resp.Body = body
	}
	if err != nil {
		resp.Error = err.Error()
		resp.JobFault = fault.KindOf(err) == fault.KindJob
	}
	resp.Stopped = ctx.Err() != nil
	return resp
}

// Client starts the worker.
type Client struct {
	// Path is the worker program (stagehand-worker); the other programs
	// (see ProgramOf) are next to it.
	Path string
	// Trace receives the worker's output.
	Trace io.Writer
	// StopGrace is how long the worker gets after SIGTERM before it is
	// killed; it must cover stopping a container.
	StopGrace time.Duration
}

// DefaultPath is the worker next to the running stagehand.
func DefaultPath() string { return defaultPath() }

var defaultPath = sync.OnceValue(func() string {
	self, err := os.Executable()
	if err != nil {
		return Program
	}
	return filepath.Join(filepath.Dir(self), Program)
})

// Call runs one operation and answers its result. When ctx ends, the
// worker gets SIGTERM, then SIGKILL after StopGrace. A failed operation
// comes back as an error carrying its fault kind; a stopped one as an
// error wrapping ctx's cause.
func Call[Out any](ctx context.Context, c Client, in Operation) (Out, error) {
	return CallPrepared[Operation, Out](ctx, c, ProgramOf(in), func() (Operation, error) { return in, nil })
}

// CallPrepared is Call of the operation prepare answers, served by
// program (ProgramOf of the operation's type): the worker starts first,
// and its start — tens of milliseconds, the most of an idle build's time
// after the git calls — overlaps prepare's work (an operator command
// reading the checkout with git). When prepare fails, the worker is
// stopped and prepare's error answered.
func CallPrepared[In Operation, Out any](ctx context.Context, c Client, program string, prepare func() (In, error)) (Out, error) {
	var out Out
	w, err := c.start(program)
	if err != nil {
		return out, err
	}
	in, err := prepare()
	if err != nil {
		w.abandon()
		return out, err
	}
	resp, err := w.finish(ctx, in)
	if len(resp.Body) > 0 && string(resp.Body) != "null" {
		if derr := json.Unmarshal(resp.Body, &out); derr != nil && err == nil {
			err = fmt.Errorf("%s result: %w", in.Op(), derr)
		}
	}
	return out, err
}

// started is a worker waiting for its request.
type started struct {
	c       Client
	program string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	result  *os.File
}

func (c Client) start(program string) (*started, error) {
	path := c.Path
	if program != Program {
		path = filepath.Join(filepath.Dir(c.Path), program)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s is not installed at %s: install it next to stagehand-worker (--worker): %w", program, path, err)
	}
	// Messages name the file run (a --worker of another name included).
	program = filepath.Base(path)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = c.Trace, c.Trace
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", program, err)
	}
	pw.Close()
	return &started{c: c, program: program, cmd: cmd, stdin: stdin, result: pr}, nil
}

// encodeRequest is the request line of operation in.
func encodeRequest(in Operation) ([]byte, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Request{Op: in.Op(), Body: body})
}

// abandon stops a worker that got no request.
func (w *started) abandon() {
	w.stdin.Close()
	_ = w.cmd.Process.Kill()
	_ = w.cmd.Wait()
	w.result.Close()
}

// finish sends the request and waits for the response.
func (w *started) finish(ctx context.Context, in Operation) (Response, error) {
	c, cmd, program, pr := w.c, w.cmd, w.program, w.result
	op := in.Op()
	req, err := encodeRequest(in)
	if err != nil {
		w.abandon()
		return Response{}, fmt.Errorf("%s request: %w", op, err)
	}
	defer pr.Close()
	// Written beside the wait below, as exec.Cmd writes a Stdin: a worker
	// that died before reading its request is reported by how it ended,
	// and a cancelled job is never stuck behind a full pipe.
	go func() {
		_, _ = w.stdin.Write(req)
		w.stdin.Close()
	}()

	var resp Response
	decoded := make(chan error, 1)
	go func() { decoded <- json.NewDecoder(pr).Decode(&resp) }()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case werr = <-waited:
		case <-time.After(c.StopGrace):
			_ = cmd.Process.Kill()
			werr = <-waited
		}
	}
	if derr := <-decoded; derr != nil {
		if werr == nil {
			werr = derr
		}
		if ctx.Err() != nil {
			return resp, fmt.Errorf("%s stopped: %w", op, context.Cause(ctx))
		}
		return resp, fmt.Errorf("%s %s gave no result: %w", program, op, werr)
	}
	if resp.Error != "" {
		err := errors.New(resp.Error)
		if resp.Stopped && ctx.Err() != nil {
			return resp, fmt.Errorf("%s stopped: %w", op, context.Cause(ctx))
		}
		if resp.JobFault {
			return resp, fault.Job(err)
		}
		return resp, fault.System(err)
	}
	return resp, nil
}
