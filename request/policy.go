package request

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// DefaultProtectedNamespaces are never deployed into nor dismissed: the
// cluster's own. A runner's settings add to them (and the synchronization
// namespace is always protected).
var DefaultProtectedNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", "default"}

// NamespacePolicy is the runner's rule of the namespaces jobs may deploy
// into and dismiss: a host setting, never a job's.
type NamespacePolicy struct {
	// Protected namespaces are never touched.
	Protected []string
	// Pattern, when set, is a regular expression every namespace must
	// match whole.
	Pattern string
	// AllowOverride lets a job name its namespace (STAGEHAND_NAMESPACE,
	// APP_NAMESPACE, KUBE_NAMESPACE) instead of the derived one.
	AllowOverride bool
}

// PolicyError is a namespace the runner's policy refuses: the job's fault.
type PolicyError struct{ Msg string }

func (e *PolicyError) Error() string { return e.Msg }

// Check says why the runner refuses namespace ns, given by the variable
// from ("" when derived), or nil.
func (p NamespacePolicy) Check(ns, from string) error {
	if slices.Contains(p.Protected, ns) {
		return &PolicyError{fmt.Sprintf("namespace %s is protected on this runner (its --protected-namespaces: %s): jobs never deploy into it nor remove it", ns, strings.Join(p.Protected, ", "))}
	}
	if from != "" && !p.AllowOverride {
		return &PolicyError{fmt.Sprintf("%s=%s names the namespace, and this runner does not let jobs choose their namespace (--allow-namespace-override): remove %s to deploy into the derived namespace", from, ns, from)}
	}
	if p.Pattern != "" {
		re, err := regexp.Compile("^(?:" + p.Pattern + ")$")
		if err != nil {
			return fmt.Errorf("the runner's --namespace-pattern %q: %w", p.Pattern, err)
		}
		if !re.MatchString(ns) {
			return &PolicyError{fmt.Sprintf("namespace %s does not match this runner's --namespace-pattern %s", ns, p.Pattern)}
		}
	}
	return nil
}

// Owner is who a deploy or dismiss acts for: namespaces carry the id of
// the project that created them, and another project's job may neither
// deploy into them nor dismiss them. An empty ProjectID (an operator's
// shell command) checks nothing.
type Owner struct {
	ProjectID   string
	ProjectPath string
	// Adopt, when set, is a regular expression of existing namespaces
	// without an owner that a project's first deploy takes over (the
	// runner's --adopt-namespaces, for moving from werf).
	Adopt string
}
