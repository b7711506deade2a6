package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/executor"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/worker"
)

// configCall runs one operation in stagehand-config.
func configCall[Out any](cmd *cobra.Command, s *executor.Settings, op worker.Operation) (Out, error) {
	ctx, stop := signalContext(cmd)
	defer stop()
	c := worker.Client{Path: s.Worker, Trace: cmd.ErrOrStderr(), StopGrace: 5e9}
	return worker.Call[Out](ctx, c, op)
}

func configCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Read the project's stage config (stagehand.yaml, werf.yml or werf.yaml)"}
	s := defaultSettings()
	var dir string
	render := &cobra.Command{
		Use:   "render [--dir D]",
		Short: "Print the config as its templates render it, as werf's config render did",
		Long: "Renders the config with werf 1.1's templates (sprig, include, tpl, .Files, .werf/**/*.tmpl) " +
			"and the environment's variables (as a job's), and prints it; errors name the source file and line.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := configCall[request.Rendered](cmd, s, request.ConfigRender{Dir: dir, Vars: environ()})
			if err != nil {
				return err
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", res.File, w)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), res.Text)
			return err
		},
	}
	render.Flags().StringVar(&dir, "dir", ".", "the project's checkout")
	workerFlags(render.Flags(), s)
	cmd.AddCommand(render)
	return cmd
}

func planCommand() *cobra.Command {
	s := defaultSettings()
	var dir string
	cmd := &cobra.Command{
		Use:   "plan [--dir D]",
		Short: "Print the images, their stages in order and each stage's signature, with no engine and no registry",
		Long: "Plans the build of the checkout in --dir as a build would: every image and artifact, its stages " +
			"in werf 1.1's order and their signatures. fromLatest bases and remote repositories are named, not " +
			"resolved (that needs a registry and the network): the stages that depend on them are listed as such. " +
			"A bad config exits non-zero naming its file and line.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := configCall[request.PlanResult](cmd, s, request.Plan{Dir: dir, Vars: environ()})
			if err != nil {
				return err
			}
			return writePlan(cmd, res)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "the project's checkout")
	workerFlags(cmd.Flags(), s)
	return cmd
}

func writePlan(cmd *cobra.Command, res request.PlanResult) error {
	w := cmd.OutOrStdout()
	stages := 0
	for _, img := range res.Images {
		stages += len(img.Stages)
	}
	fmt.Fprintf(w, "%s: project %s, %d images and artifacts, %d stages\n", res.File, res.Project, len(res.Images), stages)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tSTAGE\tSIGNATURE")
	for _, img := range res.Images {
		name := img.Name
		switch {
		case name == "":
			name = "~"
		case img.Artifact:
			name = "artifact " + name
		}
		for _, s := range img.Stages {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", name, s.Name, s.Signature)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(res.Unresolved) > 0 {
		fmt.Fprintf(w, "Not resolved without a registry or the network:\n  %s\n", strings.Join(res.Unresolved, "\n  "))
	}
	for _, n := range res.Notes {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", res.File, n)
	}
	return nil
}
