package executor

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"

	"gitlab.com/stagehand/stagehand/trace"
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
		b.WriteString(trace.Yellow + "WARNING: ")
	case logrus.ErrorLevel, logrus.FatalLevel, logrus.PanicLevel:
		b.WriteString(trace.Red + "ERROR: ")
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
		b.WriteString(trace.Reset)
	}
	b.WriteByte('\n')
	return []byte(b.String()), nil
}
