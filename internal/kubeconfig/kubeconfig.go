// Package kubeconfig finds the cluster stagehand talks to: a kubeconfig
// file (the job's KUBECONFIG file variable, or the runner's setting),
// else $KUBECONFIG, else the pod's service account.
package kubeconfig

import (
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig loads the cluster's client config. Calls time out, so that a
// dead API server fails work instead of hanging it, and the client-side
// rate limit is raised: stagehand makes bursts of small calls.
func RESTConfig(path string) (*rest.Config, error) {
	var rc *rest.Config
	if path == "" && os.Getenv("KUBECONFIG") == "" {
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
		c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			where := path
			if where == "" {
				where = "$KUBECONFIG"
			}
			return nil, fmt.Errorf("kubeconfig %s: %w", where, err)
		}
		rc = c
	}
	rc.Timeout = 30 * time.Second
	rc.QPS, rc.Burst = 50, 100
	return rc, nil
}
