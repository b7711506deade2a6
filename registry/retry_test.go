package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&transport.Error{StatusCode: 503}, true},
		{&transport.Error{StatusCode: 429}, true},
		{fmt.Errorf("push x: %w", &transport.Error{StatusCode: 502}), true},
		{&transport.Error{StatusCode: 401}, false},
		{&transport.Error{StatusCode: 404}, false},
		// A manifest put that found a blob's link mid-rewrite (see blobsUnreadable).
		{manifestPut(400, transport.DigestInvalidErrorCode, transport.ManifestBlobUnknownErrorCode), true},
		{fmt.Errorf("tag r:x: %w", manifestPut(400, transport.ManifestBlobUnknownErrorCode)), true},
		{manifestPut(400, transport.ManifestInvalidErrorCode), false},
		{manifestPut(404, transport.NameUnknownErrorCode), false},
		{blobPut(400, transport.DigestInvalidErrorCode), false},
		{fmt.Errorf("list: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("post: %w", syscall.ECONNRESET), true},
		{errors.New(`push 127.0.0.1:5000/p/stages:x: received unexpected HTTP status: 503 Service Unavailable`), true},
		{errors.New(`push r:x: Post "http://127.0.0.1:5000/v2/p/blobs/uploads/": EOF`), true},
		{errors.New("pull image r:x: manifest for r:x not found: manifest unknown"), false},
		{errors.New("push r:x: denied: requested access to the resource is denied"), false},
		{errors.New("stage backend/install stopped: lost the lock"), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func manifestPut(status int, codes ...transport.ErrorCode) error {
	return registryError(http.MethodPut, "/v2/p/app/manifests/main", status, codes)
}

func blobPut(status int, codes ...transport.ErrorCode) error {
	return registryError(http.MethodPut, "/v2/p/app/blobs/uploads/u", status, codes)
}

func registryError(method, path string, status int, codes []transport.ErrorCode) error {
	r := httptest.NewRequest(method, "http://127.0.0.1:5000"+path, nil)
	e := &transport.Error{StatusCode: status, Request: r}
	for _, c := range codes {
		e.Errors = append(e.Errors, transport.Diagnostic{Code: c})
	}
	return e
}

func TestRetryRegistryIsBounded(t *testing.T) {
	var trace bytes.Buffer
	calls := 0
	start := time.Now()
	err := Retry(context.Background(), &trace, "listing r", func() error {
		calls++
		if calls < 3 {
			return io.ErrUnexpectedEOF
		}
		return nil
	})
	if err != nil || calls != 3 || strings.Count(trace.String(), "retrying in") != 2 {
		t.Fatalf("err %v after %d calls; trace:\n%s", err, calls, &trace)
	}
	if took := time.Since(start); took < 3*time.Second {
		t.Errorf("two retries took %s, want the 1 s and 2 s waits", took)
	}
	calls = 0
	err = Retry(context.Background(), nil, "x", func() error { calls++; return &transport.Error{StatusCode: 401} })
	if calls != 1 || err == nil {
		t.Errorf("a refusal was tried %d times", calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	_ = Retry(ctx, nil, "x", func() error { calls++; return io.EOF })
	if calls != 1 {
		t.Errorf("a cancelled operation was tried %d times", calls)
	}
}

func TestWholeBodiesTurnsACutBodyIntoARequestError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, strings.Repeat("x", 40))
		if r.URL.Path == "/whole" {
			io.WriteString(w, strings.Repeat("x", 60))
		}
	}))
	defer srv.Close()
	c := &http.Client{Transport: wholeBodies{http.DefaultTransport}}
	if _, err := c.Get(srv.URL + "/v2/r/manifests/cut"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut manifest: %v, want an unexpected EOF from the request", err)
	}
	resp, err := c.Get(srv.URL + "/whole")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if len(b) != 100 {
		t.Errorf("read %d bytes of 100", len(b))
	}
}
