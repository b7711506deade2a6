// Package registryproxy is a counting reverse proxy in front of the test
// registry: tests point CI_REGISTRY at it and learn exactly what a build
// downloaded (blob GETs and their bytes) and asked (every request).
package registryproxy

import (
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Stats are the requests seen since the last Reset.
type Stats struct {
	Requests  int
	BlobGets  int   // GET of a blob that returned its body
	BlobBytes int64 // bytes of those bodies
	// BlobBytesByDigest splits BlobBytes by blob, so that a test can tell
	// layers from image configs.
	BlobBytesByDigest map[string]int64
	ManifestGets      int
	BlobHeads         int
	Uploads           int // blob upload requests (POST/PATCH/PUT under blobs/uploads)
	ManifestPuts      int
}

// Proxy forwards to a registry and counts.
type Proxy struct {
	srv  *http.Server
	ln   net.Listener
	addr string

	mu    sync.Mutex
	stats Stats

	faults   Faults
	rng      *rand.Rand
	burst    int
	injected Injected
}

var (
	blobPath     = regexp.MustCompile(`^/v2/.+/blobs/sha256:[0-9a-f]{64}$`)
	uploadPath   = regexp.MustCompile(`^/v2/.+/blobs/uploads/`)
	manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
	uploadStart  = regexp.MustCompile(`^/v2/.+/blobs/uploads/?$`)
)

// Start listens on a free loopback port (loopback registries are plain
// HTTP for Docker Engines) and forwards to target ("127.0.0.1:5000").
func Start(target string) (*Proxy, error) { return StartFaulty(target, Faults{}) }

// Faults are what a faulty proxy does to the requests it carries, each
// with its own probability per request (decided by a seeded generator, so
// a seed gives the same faults for the same requests).
type Faults struct {
	Seed int64
	// ErrorRate starts a burst of ErrorBurst (at least 1) answers 503
	// with the registry's error body, to this request and the next ones.
	ErrorRate  float64
	ErrorBurst int
	// ResetRate closes the connection without an answer.
	ResetRate float64
	// LatencyRate delays a request by Latency before forwarding it.
	LatencyRate float64
	Latency     time.Duration
	// TruncateRate forwards the answer but closes the connection after
	// half its body, its full length announced.
	TruncateRate float64
	// MaxFaults, when set, stops injecting after that many faults.
	MaxFaults int
}

// Injected counts the faults a proxy injected.
type Injected struct{ Errors, Resets, Delays, Truncations int }

// Total is every injected fault.
func (i Injected) Total() int { return i.Errors + i.Resets + i.Delays + i.Truncations }

type fault int

const (
	faultNone fault = iota
	faultError
	faultReset
	faultDelay
	faultTruncate
)

// StartFaulty is Start with faults injected into the traffic.
func StartFaulty(target string, f Faults) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, addr: ln.Addr().String(), faults: f, rng: rand.New(rand.NewSource(f.Seed))}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	// The registry builds upload locations from the Host header: keeping
	// the proxy's host keeps uploads going through it.
	director := rp.Director
	rp.Director = func(r *http.Request) {
		host := r.Host
		director(r)
		r.Host = host
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		p.count(resp)
		return nil
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p.decide() {
		case faultError:
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"service unavailable (injected)"}]}`)
			return
		case faultReset:
			// Aborting the handler closes the connection unanswered.
			panic(http.ErrAbortHandler)
		case faultDelay:
			time.Sleep(p.faults.Latency)
		case faultTruncate:
			w = &truncating{ResponseWriter: w}
		}
		rp.ServeHTTP(w, r)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// decide picks this request's fault.
func (p *Proxy) decide() fault {
	f := &p.faults
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.burst > 0 {
		p.burst--
		p.injected.Errors++
		return faultError
	}
	if f.MaxFaults > 0 && p.injected.Total() >= f.MaxFaults {
		return faultNone
	}
	x := p.rng.Float64()
	switch {
	case x < f.ErrorRate:
		p.burst = max(f.ErrorBurst, 1) - 1
		p.injected.Errors++
		return faultError
	case x < f.ErrorRate+f.ResetRate:
		p.injected.Resets++
		return faultReset
	case x < f.ErrorRate+f.ResetRate+f.LatencyRate:
		p.injected.Delays++
		return faultDelay
	case x < f.ErrorRate+f.ResetRate+f.LatencyRate+f.TruncateRate:
		p.injected.Truncations++
		return faultTruncate
	}
	return faultNone
}

// Injected returns the faults injected so far.
func (p *Proxy) Injected() Injected {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.injected
}

// SetFaults changes the faults of later requests.
func (p *Proxy) SetFaults(f Faults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults, p.burst = f, 0
	p.rng = rand.New(rand.NewSource(f.Seed))
}

// truncating passes half of a body with a known length, then drops the
// connection.
type truncating struct {
	http.ResponseWriter
	left    int64
	started bool
}

func (t *truncating) Write(b []byte) (int, error) {
	if !t.started {
		t.started = true
		n, _ := strconv.ParseInt(t.Header().Get("Content-Length"), 10, 64)
		t.left = n / 2
	}
	if t.left <= 0 || int64(len(b)) > t.left {
		if t.left > 0 {
			_, _ = t.ResponseWriter.Write(b[:t.left])
			if fl, ok := t.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
		}
		panic(http.ErrAbortHandler)
	}
	t.left -= int64(len(b))
	return t.ResponseWriter.Write(b)
}

// Addr is the proxy's host:port, to use as the registry's address.
func (p *Proxy) Addr() string { return p.addr }

// Close stops the proxy.
func (p *Proxy) Close() { _ = p.srv.Close() }

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.BlobBytesByDigest = map[string]int64{}
	for k, v := range p.stats.BlobBytesByDigest {
		s.BlobBytesByDigest[k] = v
	}
	return s
}

// Reset zeroes the counters.
func (p *Proxy) Reset() {
	p.mu.Lock()
	p.stats = Stats{}
	p.mu.Unlock()
}

func (p *Proxy) count(resp *http.Response) {
	r := resp.Request
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Requests++
	path := r.URL.Path
	switch {
	case uploadPath.MatchString(path) || uploadStart.MatchString(path):
		p.stats.Uploads++
	case blobPath.MatchString(path) && r.Method == http.MethodHead:
		p.stats.BlobHeads++
	case blobPath.MatchString(path) && r.Method == http.MethodGet && resp.StatusCode < 400:
		p.stats.BlobGets++
		digest := path[strings.LastIndex(path, "/")+1:]
		resp.Body = &countingBody{ReadCloser: resp.Body, add: func(n int64) {
			p.mu.Lock()
			p.stats.BlobBytes += n
			if p.stats.BlobBytesByDigest == nil {
				p.stats.BlobBytesByDigest = map[string]int64{}
			}
			p.stats.BlobBytesByDigest[digest] += n
			p.mu.Unlock()
		}}
	case manifestPath.MatchString(path) && r.Method == http.MethodGet:
		p.stats.ManifestGets++
	case manifestPath.MatchString(path) && r.Method == http.MethodPut:
		p.stats.ManifestPuts++
	}
}

type countingBody struct {
	io.ReadCloser
	add func(int64)
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.add(int64(n))
	return n, err
}
