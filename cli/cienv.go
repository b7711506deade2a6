package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/gitlab"
)

func ciEnvCommand() *cobra.Command {
	var dockerConfig string
	cmd := &cobra.Command{
		Use:   "ci-env",
		Short: "Print the derived CI environment of the current shell's CI_* variables as export lines",
		Long: "Reads GitLab's CI_* variables (and STAGEHAND_* overrides) from the environment, " +
			"as a job sees them, and prints what stagehand derives from them as `export NAME='value'` " +
			"lines, for `eval \"$(stagehand ci-env)\"`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := gitlab.DeriveEnv(gitlab.Input{Vars: environ(), DockerConfig: dockerConfig})
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), gitlab.FormatExports(env.Vars()))
			return err
		},
	}
	cmd.Flags().StringVar(&dockerConfig, "docker-config", os.Getenv("DOCKER_CONFIG"), "DOCKER_CONFIG to export")
	return cmd
}
