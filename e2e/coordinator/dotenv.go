package coordinator

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strings"
)

// DotenvVariables are the variables of a job's dotenv reports, as GitLab
// gives them to the later jobs of the pipeline: KEY=VALUE lines of the
// gzipped report.
func DotenvVariables(uploaded []UploadedArtifact) ([]Variable, error) {
	var out []Variable
	for _, a := range uploaded {
		if a.Type != "dotenv" {
			continue
		}
		var r io.Reader = bytes.NewReader(a.Data)
		if a.Format == "gzip" {
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, fmt.Errorf("dotenv report %s: %w", a.Filename, err)
			}
			r = zr
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "=")
			if ok && k != "" {
				out = append(out, Variable{Key: k, Value: v})
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("dotenv report %s: %w", a.Filename, err)
		}
	}
	return out, nil
}
