// Package registryproxy is a counting reverse proxy in front of the test
// registry: tests point CI_REGISTRY at it and learn exactly what a build
// downloaded (blob GETs and their bytes) and asked (every request).
package registryproxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
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
}

var (
	blobPath     = regexp.MustCompile(`^/v2/.+/blobs/sha256:[0-9a-f]{64}$`)
	uploadPath   = regexp.MustCompile(`^/v2/.+/blobs/uploads/`)
	manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
	uploadStart  = regexp.MustCompile(`^/v2/.+/blobs/uploads/?$`)
)

// Start listens on a free loopback port (loopback registries are plain
// HTTP for Docker Engines) and forwards to target ("127.0.0.1:5000").
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, addr: ln.Addr().String()}
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
	p.srv = &http.Server{Handler: rp}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
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
