package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

func ciEnvCommand() *cobra.Command {
	var dockerConfig, dir string
	s := defaultSettings()
	cmd := &cobra.Command{
		Use:   "ci-env",
		Short: "Print the derived CI environment of the current shell's CI_* variables as export lines",
		Long: "Reads GitLab's CI_* variables (and STAGEHAND_* overrides) from the environment, " +
			"as a job sees them, and prints what stagehand derives from them as `export NAME='value'` " +
			"lines, for `eval \"$(stagehand ci-env)\"`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			vars := environ()
			in := gitlab.Input{Vars: vars, DockerConfig: dockerConfig}
			// The environment's names are the project's config's, as the
			// hooks give them to the job's script.
			if dir == "" {
				dir = vars["CI_PROJECT_DIR"]
			}
			if dir != "" {
				res, err := configCall[request.NamesResult](cmd, s, request.ConfigNames{Dir: dir, Vars: vars})
				if err != nil {
					return err
				}
				in.Naming = res.Naming
			}
			env, err := gitlab.DeriveEnv(in)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), gitlab.FormatExports(env.Vars()))
			return err
		},
	}
	cmd.Flags().StringVar(&dockerConfig, "docker-config", os.Getenv("DOCKER_CONFIG"), "DOCKER_CONFIG to export")
	cmd.Flags().StringVar(&dir, "dir", "", "the project's checkout, whose config names the environments (default: CI_PROJECT_DIR)")
	workerFlags(cmd.Flags(), s)
	return cmd
}
