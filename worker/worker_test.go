package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"gitlab.com/stagehand/stagehand/fault"
)

// The test binary is its own worker: with this variable set, TestMain
// serves the test handlers instead of running tests.
const beWorker = "STAGEHAND_TEST_BE_WORKER"

var testHandlers = map[string]Handler{
	"echo": func(_ context.Context, req Request, trace io.Writer) (Response, error) {
		fmt.Fprintf(trace, "echo %s %v\n", req.Image, req.Script.Env)
		return Response{ExitCode: len(req.Script.Env)}, nil
	},
	"job-fault": func(context.Context, Request, io.Writer) (Response, error) {
		return Response{}, fault.Jobf("image %q does not exist", "nope")
	},
	"system-fault": func(context.Context, Request, io.Writer) (Response, error) {
		return Response{}, errors.New("engine unreachable")
	},
	"wait-for-stop": func(ctx context.Context, _ Request, trace io.Writer) (Response, error) {
		fmt.Fprintln(trace, "waiting")
		<-ctx.Done()
		fmt.Fprintln(trace, "stopping gracefully")
		return Response{ExitCode: -1}, context.Cause(ctx)
	},
	"ignore-stop": func(ctx context.Context, _ Request, trace io.Writer) (Response, error) {
		fmt.Fprintln(trace, "waiting")
		time.Sleep(time.Hour)
		return Response{}, nil
	},
	"crash": func(context.Context, Request, io.Writer) (Response, error) {
		os.Exit(7)
		return Response{}, nil
	},
}

func TestMain(m *testing.M) {
	if os.Getenv(beWorker) != "" {
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
	resp, err := client(t, &trace).Call(context.Background(), Request{
		Op: "echo", Image: "img", Script: &Script{Env: []string{"A=1", "SECRET=x"}},
	})
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
	_, err := c.Call(context.Background(), Request{Op: "job-fault"})
	if err == nil || fault.KindOf(err) != fault.KindJob || !strings.Contains(err.Error(), `image "nope" does not exist`) {
		t.Errorf("job fault came back as %v (%v)", err, fault.KindOf(err))
	}
	_, err = c.Call(context.Background(), Request{Op: "system-fault"})
	if err == nil || fault.KindOf(err) != fault.KindSystem || !strings.Contains(err.Error(), "engine unreachable") {
		t.Errorf("system fault came back as %v (%v)", err, fault.KindOf(err))
	}
	_, err = c.Call(context.Background(), Request{Op: "no-such-op"})
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
	_, err := c.Call(ctx, Request{Op: "wait-for-stop"})
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
	_, err := c.Call(ctx, Request{Op: "ignore-stop"})
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
	_, err := c.Call(context.Background(), Request{Op: "crash"})
	if err == nil || !strings.Contains(err.Error(), "gave no result") || fault.KindOf(err) != fault.KindSystem {
		t.Errorf("crash: %v", err)
	}
	c.Path = "/nonexistent/stagehand-worker"
	_, err = c.Call(context.Background(), Request{Op: "echo"})
	if err == nil || !strings.Contains(err.Error(), "not installed at /nonexistent/stagehand-worker") {
		t.Errorf("missing: %v", err)
	}
}
