package stagesrepo

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Records are small tags of the stages repository whose names alone say
// what cleanup must know, so that it plans from tag listings (a page of
// the GitLab API per hundred tags) instead of reading a manifest per
// published tag:
//
//   - an edge record e-<signature>-<dependency> names a stage another
//     stage was built on (its parent, or the final stage of an image it
//     imports from); e-<signature>-0 marks a stage with none. Every stage
//     stored has its edge records: the closure of an image's final stage
//     is every stage the image needs.
//   - a publication record p<kind>-<key>-<final signature> says that the
//     published tag whose PublicationKey is key is stagehand's, of which
//     kind (c commit, s stages-signature, b branch, t git tag), and which
//     stage it is.
//
// Records are written before what they describe (an edge before its
// stage's tag, a publication record before the published tag), so that a
// tag stagehand wrote always has its records; a tag without them (written
// by an older stagehand, or by another tool) is read as before, from its
// manifest. Each record's manifest is its own (the record's name is in an
// annotation), so deleting one by digest deletes no other tag.
const (
	edgeRecordPrefix = "e-"
	pubRecordPrefix  = "p"
	// noDependency is the dependency of a stage built on nothing stored.
	noDependency = "0"
	// AnnotationRecord holds a record's own name in its manifest.
	AnnotationRecord = "io.stagehand.record"
)

// PublicationKind is what a published tag stands for, as its publication
// record says.
type PublicationKind byte

const (
	PublishedCommit    PublicationKind = 'c'
	PublishedSignature PublicationKind = 's'
	PublishedBranch    PublicationKind = 'b'
	PublishedGitTag    PublicationKind = 't'
)

// EdgeRecord is the record of stage sig depending on dep ("" = nothing).
func EdgeRecord(sig, dep string) string {
	if dep == "" {
		dep = noDependency
	}
	return edgeRecordPrefix + sig + "-" + dep
}

// PublicationKey identifies a published tag (repository and tag) in 40
// hex digits: the repository path and a tag together can be longer than
// a tag name may be.
func PublicationKey(repo, tag string) string {
	sum := sha256.Sum256([]byte(repo + ":" + tag))
	return hex.EncodeToString(sum[:20])
}

// PublicationRecord is the record of repo:tag being stagehand's
// publication of kind, whose image is the stage final.
func PublicationRecord(kind PublicationKind, repo, tag, final string) string {
	return pubRecordPrefix + string(kind) + "-" + PublicationKey(repo, tag) + "-" + final
}

// Publication is what a publication record says.
type Publication struct {
	Record string
	Kind   PublicationKind
	// Final is the signature of the published image's last stage.
	Final string
}

// Records are the records of a stages repository's listing.
type Records struct {
	// Edges maps a stage signature to what it depends on (an empty list
	// for a first stage); a signature without an entry has no records.
	Edges map[string][]string
	// EdgeTags are the edge records by signature.
	EdgeTags map[string][]string
	// Publications maps a publication key to its records.
	Publications map[string][]Publication
}

// ParseRecords collects the records among a stages repository's tags.
func ParseRecords(tags []string) Records {
	r := Records{Edges: map[string][]string{}, EdgeTags: map[string][]string{}, Publications: map[string][]Publication{}}
	for _, t := range tags {
		if sig, dep, ok := parseEdgeRecord(t); ok {
			if dep == noDependency {
				dep = ""
			}
			deps := r.Edges[sig]
			if dep != "" {
				deps = append(deps, dep)
			} else if deps == nil {
				deps = []string{}
			}
			r.Edges[sig] = deps
			r.EdgeTags[sig] = append(r.EdgeTags[sig], t)
			continue
		}
		if key, p, ok := parsePublicationRecord(t); ok {
			r.Publications[key] = append(r.Publications[key], p)
		}
	}
	return r
}

// IsRecord tells a record's tag from a stage's or anything else.
func IsRecord(tag string) bool {
	if _, _, ok := parseEdgeRecord(tag); ok {
		return true
	}
	_, _, ok := parsePublicationRecord(tag)
	return ok
}

func parseEdgeRecord(t string) (sig, dep string, ok bool) {
	rest, ok := strings.CutPrefix(t, edgeRecordPrefix)
	if !ok {
		return "", "", false
	}
	sig, dep, ok = strings.Cut(rest, "-")
	if !ok || !isHex(sig, SignatureLength) || (dep != noDependency && !isHex(dep, SignatureLength)) {
		return "", "", false
	}
	return sig, dep, true
}

func parsePublicationRecord(t string) (key string, p Publication, ok bool) {
	if len(t) < 3 || !strings.HasPrefix(t, pubRecordPrefix) || t[2] != '-' {
		return "", Publication{}, false
	}
	kind := PublicationKind(t[1])
	switch kind {
	case PublishedCommit, PublishedSignature, PublishedBranch, PublishedGitTag:
	default:
		return "", Publication{}, false
	}
	key, final, ok := strings.Cut(t[3:], "-")
	if !ok || !isHex(key, 40) || !isHex(final, SignatureLength) {
		return "", Publication{}, false
	}
	return key, Publication{Record: t, Kind: kind, Final: final}, true
}

// Closure is every stage final needs (itself, its parents and what they
// import, transitively), from the edge records; ok is false when a stage
// on the way has no records, so that the caller learns it otherwise.
func (r Records) Closure(final string) (sigs []string, ok bool) {
	seen := map[string]bool{}
	todo := []string{final}
	for len(todo) > 0 {
		s := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[s] {
			continue
		}
		seen[s] = true
		sigs = append(sigs, s)
		deps, known := r.Edges[s]
		if !known {
			return nil, false
		}
		todo = append(todo, deps...)
	}
	return sigs, true
}
