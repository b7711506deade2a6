// Package stagesrepo is the format of what stagehand writes into a
// registry and what cleanup reads back: the tags of a stages repository
// (stages, records, import layers), the labels of stage images and the
// annotations of published manifests. Builds (package stages) write it,
// cleanup (package cleanup) reads it; neither knows the other's code.
//
// Everything here is names and parsing: no registry call, no I/O.
package stagesrepo

import (
	"strconv"
	"strings"
)

// Labels every stage image carries, so that cleanup and people can tell
// what a stage is without its tag.
const (
	LabelSignature = "io.stagehand.stage.signature"
	LabelStage     = "io.stagehand.stage.name"
	LabelImage     = "io.stagehand.stage.image"
	LabelProject   = "io.stagehand.project"
	LabelCommit    = "io.stagehand.commit"
	// LabelGitPrefix + mapping index holds the git files an image has, so
	// that the next patch is computed from the config alone.
	LabelGitPrefix = "io.stagehand.git."
)

// GitListingLabel is the label holding the listing of git mapping i.
func GitListingLabel(i int) string { return LabelGitPrefix + strconv.Itoa(i) }

// Annotations of a published image's manifest: what cleanup needs to
// decide about it without reading anything else.
const (
	AnnotationRef        = "io.stagehand.ref"         // branch or git tag name
	AnnotationRefKind    = "io.stagehand.ref-kind"    // RefKindBranch or RefKindTag
	AnnotationCommit     = "io.stagehand.commit"      // commit SHA
	AnnotationCommitTime = "io.stagehand.commit-time" // commit time (RFC 3339), the image's age for policies
	AnnotationImage      = "io.stagehand.image"       // image name in the config
	AnnotationStage      = "io.stagehand.stage"       // the stage tag the image is
	AnnotationStages     = "io.stagehand.stages"      // every stage signature the image was built from, comma-separated
)

// Values of AnnotationRefKind.
const (
	RefKindBranch = "branch"
	RefKindTag    = "tag"
)

// SignatureLength is the length of a stage signature: SHA3-224 in hex.
const SignatureLength = 56

// StageTag is one stored copy of a stage: the tag <signature>-<unix ms>
// of the stages repository (or of the :local storage's engine repository).
type StageTag struct {
	Signature string
	// Millis is when the stage was stored (Unix milliseconds).
	Millis int64
}

// String is the tag.
func (s StageTag) String() string { return s.Signature + "-" + strconv.FormatInt(s.Millis, 10) }

// ParseStageTag reads a stage tag; ok is false for tags of anything else.
func ParseStageTag(tag string) (StageTag, bool) {
	sig, ms, ok := strings.Cut(tag, "-")
	if !ok || !isHex(sig, SignatureLength) {
		return StageTag{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n <= 0 {
		return StageTag{}, false
	}
	return StageTag{Signature: sig, Millis: n}, true
}

// Oldest chooses among the stored copies of one signature: the oldest, so
// that every reader agrees on one copy even when hosts without a lock
// stored the same stage twice. copies must not be empty.
func Oldest(copies []StageTag) StageTag {
	best := copies[0]
	for _, c := range copies[1:] {
		if c.Millis < best.Millis {
			best = c
		}
	}
	return best
}

// importTagPrefix marks the tags holding import layers: an image whose one
// layer is what an import stage adds, whatever the stage's parent.
const importTagPrefix = "import-"

// ImportTag is the tag of the import layer of key.
func ImportTag(key string) string { return importTagPrefix + key }

// IsImportTag tells an import layer's tag.
func IsImportTag(tag string) bool { return strings.HasPrefix(tag, importTagPrefix) }

func isHex(s string, n int) bool {
	return len(s) == n && strings.Trim(s, "0123456789abcdef") == ""
}
