package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/fault"
)

// The test binary is its own worker: with this variable set, TestMain
// serves the test handlers instead of running tests.
const beWorker = "STAGEHAND_TEST_BE_WORKER"

// testOp is a request of the test operations; Name picks one.
type testOp struct {
	Name  string
	Image string
	Env   []string
}

func (o testOp) Op() string { return o.Name }

type echoOp struct{ testOp }

func (echoOp) Op() string { return "echo" }

type testResult struct{ ExitCode int }

var testHandlers = func() Handlers {
	h := Handlers{}
	Handle(h, func(_ context.Context, req echoOp, trace io.Writer) (testResult, error) {
		fmt.Fprintf(trace, "echo %s %v\n", req.Image, req.Env)
		return testResult{ExitCode: len(req.Env)}, nil
	})
	h["job-fault"] = func(context.Context, json.RawMessage, io.Writer) (any, error) {
		return nil, fault.Jobf("image %q does not exist", "nope")
	}
	h["system-fault"] = func(context.Context, json.RawMessage, io.Writer) (any, error) {
		return nil, errors.New("engine unreachable")
	}
	h["wait-for-stop"] = func(ctx context.Context, _ json.RawMessage, trace io.Writer) (any, error) {
		fmt.Fprintln(trace, "waiting")
		<-ctx.Done()
		fmt.Fprintln(trace, "stopping gracefully")
		return testResult{ExitCode: -1}, context.Cause(ctx)
	}
	h["ignore-stop"] = func(ctx context.Context, _ json.RawMessage, trace io.Writer) (any, error) {
		fmt.Fprintln(trace, "waiting")
		time.Sleep(time.Hour)
		return nil, nil
	}
	h["crash"] = func(context.Context, json.RawMessage, io.Writer) (any, error) {
		os.Exit(7)
		return nil, nil
	}
	return h
}()

func TestMain(m *testing.M) {
	if os.Getenv(beWorker) != "" {
		if f := os.Getenv(startedFile); f != "" {
			os.WriteFile(f, nil, 0o600)
		}
		os.Exit(Serve(testHandlers, os.Stdin, os.Stderr))
	}
	os.Exit(m.Run())
}

func client(t *testing.T, trace io.Writer) Client {
	t.Helper()
	t.Setenv(beWorker, "1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Client{Path: self, Trace: trace, StopGrace: 2 * time.Second}
}

type syncBuffer struct {
	ch chan string
	sb strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.sb.Write(p)
	if b.ch != nil && strings.Contains(string(p), "waiting") {
		b.ch <- "waiting"
	}
	return len(p), nil
}

func TestCallCarriesRequestAndResult(t *testing.T) {
	var trace syncBuffer
	resp, err := Call[testResult](context.Background(), client(t, &trace), echoOp{testOp{Image: "img", Env: []string{"A=1", "SECRET=x"}}})
	if err != nil || resp.ExitCode != 2 {
		t.Fatalf("resp %+v err %v", resp, err)
	}
	if !strings.Contains(trace.sb.String(), "echo img [A=1 SECRET=x]") {
		t.Errorf("trace %q", trace.sb.String())
	}
}

func TestCallKeepsFaultKind(t *testing.T) {
	var trace syncBuffer
	c := client(t, &trace)
	_, err := Call[testResult](context.Background(), c, testOp{Name: "job-fault"})
	if err == nil || fault.KindOf(err) != fault.KindJob || !strings.Contains(err.Error(), `image "nope" does not exist`) {
		t.Errorf("job fault came back as %v (%v)", err, fault.KindOf(err))
	}
	_, err = Call[testResult](context.Background(), c, testOp{Name: "system-fault"})
	if err == nil || fault.KindOf(err) != fault.KindSystem || !strings.Contains(err.Error(), "engine unreachable") {
		t.Errorf("system fault came back as %v (%v)", err, fault.KindOf(err))
	}
	_, err = Call[testResult](context.Background(), c, testOp{Name: "no-such-op"})
	if err == nil || !strings.Contains(err.Error(), `unknown operation "no-such-op"`) {
		t.Errorf("unknown op: %v", err)
	}
}

func TestCallStopsWorkerWithSIGTERM(t *testing.T) {
	trace := syncBuffer{ch: make(chan string, 1)}
	c := client(t, &trace)
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		<-trace.ch
		cancel(errors.New("job cancelled"))
	}()
	start := time.Now()
	_, err := Call[testResult](ctx, c, testOp{Name: "wait-for-stop"})
	if err == nil || !strings.Contains(err.Error(), "wait-for-stop stopped: job cancelled") {
		t.Errorf("err %v", err)
	}
	if !strings.Contains(trace.sb.String(), "stopping gracefully") {
		t.Errorf("the worker did not stop gracefully: %q", trace.sb.String())
	}
	if d := time.Since(start); d > c.StopGrace {
		t.Errorf("stop took %s", d)
	}
}

func TestCallKillsWorkerAfterGrace(t *testing.T) {
	trace := syncBuffer{ch: make(chan string, 1)}
	c := client(t, &trace)
	c.StopGrace = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-trace.ch
		cancel()
	}()
	start := time.Now()
	_, err := Call[testResult](ctx, c, testOp{Name: "ignore-stop"})
	if err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("err %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("kill took %s", d)
	}
}

func TestCallReportsACrashedOrMissingWorker(t *testing.T) {
	var trace syncBuffer
	c := client(t, &trace)
	_, err := Call[testResult](context.Background(), c, testOp{Name: "crash"})
	if err == nil || !strings.Contains(err.Error(), "gave no result") || fault.KindOf(err) != fault.KindSystem {
		t.Errorf("crash: %v", err)
	}
	c.Path = "/nonexistent/stagehand-worker"
	_, err = Call[testResult](context.Background(), c, testOp{Name: "echo"})
	if err == nil || !strings.Contains(err.Error(), "not installed at /nonexistent/stagehand-worker") {
		t.Errorf("missing: %v", err)
	}
}

type deployOp struct{}

func (deployOp) Op() string      { return "deploy-test" }
func (deployOp) Program() string { return "stagehand-deploy" }

type plainOp struct{}

func (plainOp) Op() string { return "plain-test" }

// startedFile, when set, names a file the test worker makes as it starts.
const startedFile = "WORKER_TEST_STARTED_FILE"

// TestCallPreparedStartsTheWorkerFirst: the worker starts before the
// request is prepared (the two overlap), and a failed preparation
// answers its own error.
func TestCallPreparedStartsTheWorkerFirst(t *testing.T) {
	var trace syncBuffer
	c := client(t, &trace)
	started := filepath.Join(t.TempDir(), "started")
	t.Setenv(startedFile, started)
	prepare := func() (echoOp, error) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(started); err == nil {
				return echoOp{testOp{Image: "img"}}, nil
			}
			if time.Now().After(deadline) {
				return echoOp{}, errors.New("the worker did not start before the request was ready")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	resp, err := CallPrepared[echoOp, testResult](context.Background(), c, Program, prepare)
	if err != nil || !strings.Contains(trace.sb.String(), "echo img") {
		t.Fatalf("resp %+v err %v; trace %q", resp, err, trace.sb.String())
	}
	bad := errors.New("no images repository: give --repo")
	start := time.Now()
	_, err = CallPrepared[echoOp, testResult](context.Background(), c, Program, func() (echoOp, error) { return echoOp{}, bad })
	if !errors.Is(err, bad) {
		t.Errorf("a failed preparation answered %v, want its own error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopping the worker that got no request took %s", d)
	}
}

func TestProgramOf(t *testing.T) {
	if got := ProgramOf(deployOp{}); got != "stagehand-deploy" {
		t.Errorf("ProgramOf(deploy) = %q", got)
	}
	if got := ProgramOf(plainOp{}); got != Program {
		t.Errorf("ProgramOf(plain) = %q", got)
	}
	// The program is looked for next to the worker.
	c := Client{Path: "/opt/stagehand/bin/stagehand-worker"}
	_, err := Call[struct{}](context.Background(), c, deployOp{})
	if err == nil || !strings.Contains(err.Error(), "stagehand-deploy is not installed at /opt/stagehand/bin/stagehand-deploy") {
		t.Errorf("err = %v", err)
	}
}
