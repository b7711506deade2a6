// Package kubeconfig finds the cluster stagehand talks to: a kubeconfig
// file (the job's KUBECONFIG file variable, or the runner's setting),
// else $KUBECONFIG, else the pod's service account; and, in a kubeconfig
// of several (GitLab's agent gives one context per agent), the context a
// job names with KUBE_CONTEXT.
package kubeconfig

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig loads the cluster's client config: context ("" for the
// kubeconfig's current one). Calls time out, so that a dead API server
// fails work instead of hanging it, and the client-side rate limit is
// raised: stagehand makes bursts of small calls.
func RESTConfig(path, context string) (*rest.Config, error) {
	var rc *rest.Config
	if path == "" && os.Getenv("KUBECONFIG") == "" {
		if context != "" {
			return nil, fmt.Errorf("KUBE_CONTEXT=%s names a context, but there is no kubeconfig (a KUBECONFIG file variable on the job, --kubeconfig on the runner, or KUBECONFIG in its environment)", context)
		}
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no kubeconfig (a KUBECONFIG file variable on the job, --kubeconfig on the runner, or KUBECONFIG in its environment) and not running in a cluster: %w", err)
		}
		rc = c
	} else {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if path != "" {
			rules.ExplicitPath = path
		}
		where := path
		if where == "" {
			where = "$KUBECONFIG"
		}
		if context != "" {
			raw, err := rules.Load()
			if err != nil {
				return nil, fmt.Errorf("kubeconfig %s: %w", where, err)
			}
			if _, ok := raw.Contexts[context]; !ok {
				return nil, fmt.Errorf("KUBE_CONTEXT=%s is not a context of the kubeconfig %s; its contexts: %s", context, where, strings.Join(Contexts(raw.Contexts), ", "))
			}
		}
		c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", where, err)
		}
		rc = c
	}
	rc.Timeout = 30 * time.Second
	rc.QPS, rc.Burst = 50, 100
	return rc, nil
}

// Contexts are the names of a kubeconfig's contexts, sorted.
func Contexts[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// AllContexts are the contexts of a kubeconfig file (or $KUBECONFIG).
func AllContexts(path string) ([]string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	raw, err := rules.Load()
	if err != nil {
		return nil, err
	}
	return Contexts(raw.Contexts), nil
}
