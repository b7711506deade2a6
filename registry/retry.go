package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// A registry (or the network to it) fails now and then: a burst of 503s
// while it restarts, a reset connection, a body cut short. Every request
// go-containerregistry makes is retried by it (three more times, after
// 1 s, 3 s and 9 s); what it cannot retry — a body that broke after the
// answer began, the engine's pushes and pulls, an operation of several
// requests — is retried here, as a whole, Attempts times in all,
// with a line in the trace each time. Both are bounded: a registry that
// stays down fails the job as a system failure within about a minute.
const Attempts = 4

// Retry runs op until it succeeds, fails for good, or has failed
// Attempts times; waits double from one second.
func Retry(ctx context.Context, trace io.Writer, what string, op func() error) error {
	delay := time.Second
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || attempt == Attempts || !Transient(err) || ctx.Err() != nil {
			return err
		}
		if trace != nil {
			fmt.Fprintf(trace, "Registry: %s failed (%v); retrying in %s (attempt %d of %d)\n", what, err, delay, attempt+1, Attempts)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// transientMarks are what the engine's error messages (strings from the
// daemon) say of failures that may pass.
var transientMarks = []string{
	"503 Service Unavailable", "502 Bad Gateway", "500 Internal Server Error", "504 Gateway Timeout", "429 Too Many Requests",
	"EOF", "connection reset", "broken pipe", "i/o timeout", "connection refused", "TLS handshake timeout", "server closed",
}

// Transient tells failures that may pass from those that will not (a
// refused login, a missing image, a bad manifest).
func Transient(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode == http.StatusTooManyRequests || te.StatusCode >= 500 || blobsUnreadable(te)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	msg := err.Error()
	for _, m := range transientMarks {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// blobsUnreadable tells a manifest put refused because the registry could
// not read one of the blobs it names. Distribution's filesystem storage
// rewrites a blob's link in a repository in place each time a client
// uploads or mounts that blob there; a manifest put checking the link in
// that moment reads it empty and answers DIGEST_INVALID and
// MANIFEST_BLOB_UNKNOWN, though the blob is there before and after. Many
// builds publishing the same image at once meet this. The same put passes
// when tried again; a blob really missing fails every attempt.
func blobsUnreadable(te *transport.Error) bool {
	if te.StatusCode != http.StatusBadRequest || te.Request == nil || te.Request.Method != http.MethodPut ||
		!strings.Contains(te.Request.URL.Path, "/manifests/") {
		return false
	}
	for _, d := range te.Errors {
		if d.Code == transport.DigestInvalidErrorCode || d.Code == transport.ManifestBlobUnknownErrorCode {
			return true
		}
	}
	return false
}

// wholeBodies reads small answers (manifests, tag lists, configs; not
// layers) whole before handing them on, so that a body cut short is an
// error of the request — which go-containerregistry retries — rather than
// of a later read, which nothing retries.
type wholeBodies struct{ base http.RoundTripper }

// maxWholeBody is the largest answer read whole: far above any manifest,
// tag list or image config, far below a layer worth keeping in memory.
const maxWholeBody = 4 << 20

func (w wholeBodies) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := w.base.RoundTrip(r)
	if err != nil || r.Method != http.MethodGet || resp.ContentLength > maxWholeBody ||
		(resp.ContentLength < 0 && strings.Contains(r.URL.Path, "/blobs/")) {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWholeBody+1))
	if err == nil && len(body) > maxWholeBody {
		// Longer than it said it might be: hand on what was read, then
		// the rest as it comes.
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return resp, nil
	}
	resp.Body.Close()
	if err == nil && resp.ContentLength >= 0 && int64(len(body)) != resp.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, fmt.Errorf("read the answer to %s %s: %w", r.Method, r.URL.Redacted(), err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
