// Package trace writes what people read in a GitLab job log: colours,
// collapsible sections, and lines of a command's output marked as
// belonging to it. The hooks and stagehand-worker both write the job
// trace, so it is light.
package trace

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ANSI colours as GitLab's job log renders them.
const (
	Reset  = "\x1b[0;m"
	Bold   = "\x1b[1m"
	Cyan   = "\x1b[36;1m"
	Green  = "\x1b[32;1m"
	Yellow = "\x1b[0;33m"
	Red    = "\x1b[31;1m"
	Clear  = "\x1b[0K"
)

// SectionStart opens a GitLab section; collapsed ones show only their
// header until opened.
func SectionStart(w io.Writer, name, header string, collapsed bool) {
	opt := ""
	if collapsed {
		opt = "[collapsed=true]"
	}
	fmt.Fprintf(w, "section_start:%d:%s%s\r%s%s%s%s\n", time.Now().Unix(), name, opt, Clear, Cyan, header, Reset)
}

// SectionEnd closes a section.
func SectionEnd(w io.Writer, name string) {
	fmt.Fprintf(w, "section_end:%d:%s\r%s", time.Now().Unix(), name, Clear)
}

// Section runs fn inside a section and closes it with a one-line summary
// carrying the duration.
func Section(w io.Writer, name, header string, collapsed bool, fn func() error) error {
	start := time.Now()
	SectionStart(w, name, header, collapsed)
	err := fn()
	SectionEnd(w, name)
	d := time.Since(start).Round(time.Millisecond)
	if err != nil {
		fmt.Fprintf(w, "%s%s failed after %s%s\n", Red, header, d, Reset)
		return err
	}
	fmt.Fprintf(w, "%s%s done in %s%s\n", Green, header, d, Reset)
	return nil
}

// SectionName makes s a section name (letters, digits, '_', '-', '.').
func SectionName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Prefix is the mark before each line of a stage's own output.
const Prefix = "  │ "

// Lines writes another command's output to w a line at a time, each
// after Prefix, and keeps its last lines for an error to quote. Drop, when
// set, leaves out the lines it matches (the engine's own chatter).
type Lines struct {
	w    io.Writer
	keep int
	Drop func(line string) bool

	mu      sync.Mutex
	partial []byte
	last    []string
}

// NewLines writes to w and keeps the last keep lines.
func NewLines(w io.Writer, keep int) *Lines { return &Lines{w: w, keep: keep} }

func (l *Lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *Lines) line(s string) {
	s = strings.TrimRight(s, "\r")
	if l.Drop != nil && l.Drop(s) {
		return
	}
	fmt.Fprintf(l.w, "%s%s\n", Prefix, s)
	if l.keep > 0 {
		l.last = append(l.last, s)
		if len(l.last) > l.keep {
			l.last = l.last[len(l.last)-l.keep:]
		}
	}
}

// Flush writes a last line without its newline.
func (l *Lines) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(string(l.partial))
		l.partial = nil
	}
}

// Last are the last lines written.
func (l *Lines) Last() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.last...)
}

// Progress reports a long transfer: a line every Every with the bytes
// done, the total and the rate, and nothing for transfers smaller than
// Min (most layers), so that the trace is never a line per chunk.
type Progress struct {
	w     io.Writer
	what  string
	Every time.Duration
	Min   int64

	mu    sync.Mutex
	start time.Time
	last  time.Time
	done  int64
}

// NewProgress reports the transfer named what (e.g. "pulling x") to w.
func NewProgress(w io.Writer, what string) *Progress {
	now := time.Now()
	return &Progress{w: w, what: what, Every: 5 * time.Second, Min: 8 << 20, start: now, last: now}
}

// Update says done of total bytes are transferred; safe for concurrent
// use.
func (p *Progress) Update(done, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = done
	now := time.Now()
	if total < p.Min || now.Sub(p.last) < p.Every {
		return
	}
	p.last = now
	rate := float64(done) / now.Sub(p.start).Seconds()
	fmt.Fprintf(p.w, "%s: %s of %s (%s/s)\n", p.what, Bytes(done), Bytes(total), Bytes(int64(rate)))
}

// Bytes is n in B, kB, MB or GB (powers of 1000, as registries and
// the docker CLI count).
func Bytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// Synced is a writer safe for concurrent use: work going on in the
// background (a stage's push) writes to the trace beside the stage being
// built, each Write whole.
func Synced(w io.Writer) io.Writer {
	if _, ok := w.(*synced); ok {
		return w
	}
	return &synced{w: w}
}

type synced struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *synced) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
