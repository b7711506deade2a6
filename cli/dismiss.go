package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/request"
)

func dismissCommand() *cobra.Command {
	s := defaultSettings()
	var namespace, release string
	cmd := &cobra.Command{
		Use:   "dismiss --namespace NS [--release NAME]",
		Short: "Remove an environment: uninstall its release, delete its namespace and wait until it is gone",
		Long: "What a stop job does, from a shell. The namespace is never re-created; an environment " +
			"that does not exist is dismissed with a note. The cluster comes from --kubeconfig, else " +
			"KUBECONFIG, else the pod's service account.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if namespace == "" {
				return fmt.Errorf("give --namespace (or set %s)", EnvName("namespace"))
			}
			if release == "" {
				release = namespace
			}
			req := request.Dismiss{
				Cluster:   request.Cluster{Kubeconfig: s.Kubeconfig},
				Protected: s.NamespacePolicy().Protected,
				Namespace: namespace, Release: release, Timeout: s.DeployTimeout,
			}
			_, err := call[struct{}](cmd, s, req)
			return err
		},
	}
	f := cmd.Flags()
	// Their STAGEHAND_* defaults are what a job's script gets.
	f.StringVar(&namespace, "namespace", "", "the environment's namespace")
	f.StringVar(&release, "release", "", "the environment's Helm release (default: the namespace)")
	clusterFlags(f, s)
	deployFlags(f, s)
	workerFlags(f, s)
	return cmd
}
