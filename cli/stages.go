package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/request"
)

func stagesCommand() *cobra.Command {
	stagesCmd := &cobra.Command{Use: "stages", Short: "Operate on a project's stages storage"}
	stagesCmd.AddCommand(
		stagesSyncCommand(&cobra.Command{
			Use:   "sync --from A --to B",
			Short: "Copy the stages A has and B lacks (A, B: :local or a repository); run again to resume",
		}, false, "copied %d stages, %d already there\n"),
		stagesSyncCommand(&cobra.Command{
			Use:   "switch-from-local --to REPO --project P",
			Short: "Move a project's :local stages to a registry and block later :local builds",
			Long: "Blocks :local builds of the project on this host (a block file in --block-dir), copies its " +
				"local stages to --to and removes them from the engine. Roll back with " +
				"`stagehand stages sync --from REPO --to :local` and removing the block file.",
		}, true, "moved %d stages (%d were already there)\n"),
	)
	return stagesCmd
}

// stagesSyncCommand is `stages sync` or, with switchFromLocal, `stages
// switch-from-local` (whose source is always :local); report prints the
// counts.
func stagesSyncCommand(cmd *cobra.Command, switchFromLocal bool, report string) *cobra.Command {
	s := defaultSettings()
	req := request.StagesSync{SwitchFromLocal: switchFromLocal}
	var project string
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		req.Project, req.Engine, req.BlockDir = request.ProjectName(project), engine(s), s.BlockDir
		res, err := call[request.SyncResult](cmd, s, req)
		if err == nil {
			fmt.Fprintf(cmd.OutOrStdout(), report, res.Copied, res.Present)
		}
		return err
	}
	f := cmd.Flags()
	if switchFromLocal {
		req.From = ":local"
	} else {
		f.StringVar(&req.From, "from", "", "source storage (:local or a repository)")
		_ = cmd.MarkFlagRequired("from")
	}
	f.StringVar(&req.To, "to", "", "destination storage (:local or a repository)")
	f.StringVar(&project, "project", "", "the project of the :local stages, as its builds name it (--project of `stagehand build`)")
	_ = cmd.MarkFlagRequired("to")
	if switchFromLocal {
		_ = cmd.MarkFlagRequired("project")
	}
	engineFlags(f, s)
	workerFlags(f, s)
	localStagesFlags(f, s)
	return cmd
}
