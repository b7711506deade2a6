package executor

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// ANSI colours as GitLab's job log renders them.
const (
	ansiReset  = "\x1b[0;m"
	ansiBold   = "\x1b[1m"
	ansiCyan   = "\x1b[36;1m"
	ansiGreen  = "\x1b[32;1m"
	ansiYellow = "\x1b[0;33m"
	ansiRed    = "\x1b[31;1m"
	ansiClear  = "\x1b[0K"
)

// NewLogger returns a logrus logger that writes to the job trace.
func NewLogger(w io.Writer) *logrus.Logger {
	return &logrus.Logger{
		Out:       w,
		Formatter: traceFormatter{},
		Hooks:     make(logrus.LevelHooks),
		Level:     logrus.InfoLevel,
	}
}

// traceFormatter writes one short coloured line per entry: the job log is
// read by people, so no timestamps (the runner adds its own) and no levels
// for plain progress.
type traceFormatter struct{}

func (traceFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var b strings.Builder
	switch e.Level {
	case logrus.WarnLevel:
		b.WriteString(ansiYellow + "WARNING: ")
	case logrus.ErrorLevel, logrus.FatalLevel, logrus.PanicLevel:
		b.WriteString(ansiRed + "ERROR: ")
	case logrus.DebugLevel, logrus.TraceLevel:
		b.WriteString("DEBUG: ")
	}
	b.WriteString(e.Message)
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
	}
	if e.Level <= logrus.WarnLevel {
		b.WriteString(ansiReset)
	}
	b.WriteByte('\n')
	return []byte(b.String()), nil
}

// Section runs fn inside a collapsible GitLab section of the trace and
// closes it with a one-line summary carrying the duration.
func Section(w io.Writer, name, header string, fn func() error) error {
	start := time.Now()
	fmt.Fprintf(w, "section_start:%d:%s[collapsed=true]\r%s%s%s%s\n", start.Unix(), name, ansiClear, ansiCyan, header, ansiReset)
	err := fn()
	end := time.Now()
	fmt.Fprintf(w, "section_end:%d:%s\r%s", end.Unix(), name, ansiClear)
	d := end.Sub(start).Round(time.Millisecond)
	if err != nil {
		fmt.Fprintf(w, "%s%s failed after %s%s\n", ansiRed, header, d, ansiReset)
		return err
	}
	fmt.Fprintf(w, "%s%s done in %s%s\n", ansiGreen, header, d, ansiReset)
	return nil
}
