package request

import (
	"fmt"
	"strings"
)

// SyncKind is how builds on several hosts coordinate.
type SyncKind int

const (
	// SyncNone takes no locks: hosts may build a stage twice, and readers
	// agree on the oldest copy.
	SyncNone SyncKind = iota
	// SyncLocal takes file locks on this host (werf's :local).
	SyncLocal
	// SyncKubernetes takes leases on a ConfigMap every host shares.
	SyncKubernetes
)

// Synchronization is a parsed STAGEHAND_SYNCHRONIZATION (or
// --synchronization) value.
type Synchronization struct {
	Kind SyncKind
	// Namespace holds the ConfigMaps of SyncKubernetes.
	Namespace string `json:",omitempty"`
}

// Spellings of the synchronization kinds.
const (
	syncNone       = "none"
	syncLocal      = ":local"
	kubernetesSync = "kubernetes://"
)

// ParseSynchronization reads a synchronization spec: "none" (or ""),
// ":local" or "kubernetes://NAMESPACE". name is the variable or flag the
// value came from, for the error.
func ParseSynchronization(name, spec string) (Synchronization, error) {
	switch {
	case spec == "" || spec == syncNone:
		return Synchronization{Kind: SyncNone}, nil
	case spec == syncLocal:
		return Synchronization{Kind: SyncLocal}, nil
	case strings.HasPrefix(spec, kubernetesSync):
		ns := strings.TrimPrefix(spec, kubernetesSync)
		if ns == "" || strings.Contains(ns, "/") {
			return Synchronization{}, fmt.Errorf("%s=%q: give the namespace, as kubernetes://stagehand-synchronization", name, spec)
		}
		return Synchronization{Kind: SyncKubernetes, Namespace: ns}, nil
	}
	return Synchronization{}, fmt.Errorf("%s=%q: use :local (file locks on this host), kubernetes://NAMESPACE (a ConfigMap shared by every host) or none", name, spec)
}

// String is the spec's spelling.
func (s Synchronization) String() string {
	switch s.Kind {
	case SyncLocal:
		return syncLocal
	case SyncKubernetes:
		return kubernetesSync + s.Namespace
	}
	return syncNone
}

// DefaultLocksDir is where :local keeps its file locks unless the runner's
// settings say otherwise.
const DefaultLocksDir = "/var/lib/stagehand/locks"
