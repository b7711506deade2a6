package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/executor"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

func cleanupCommand() *cobra.Command {
	s := defaultSettings()
	var apiURL, project, stagesStorage, namespaces string
	var dryRun, builder bool
	pols := gitlab.DefaultPolicies
	cmd := &cobra.Command{
		Use:   "cleanup --project GROUP/NAME --stages-storage REPO",
		Short: "Clean a project's registry images by its git policies, its stages and (--builder) this host's cache",
		Long: "What a scheduled pipeline's job does, from a shell. The token comes from " + executor.VarCleanupToken +
			" (never a flag: it would show in ps); registry logins from DOCKER_CONFIG. --dry-run prints the plan only. " +
			"The project lock it takes exclusively is the one builds of --project take (its path slugged, as CI_PROJECT_PATH_SLUG).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if project == "" {
				return fmt.Errorf("give --project GROUP/NAME (or set CI_PROJECT_PATH)")
			}
			l, err := locks(s, request.ProjectName(project), "cleanup")
			if err != nil {
				return err
			}
			req := request.Cleanup{
				APIURL: apiURL, Token: os.Getenv(executor.VarCleanupToken), Project: project,
				Locks:         l,
				StagesStorage: stagesStorage,
				Cluster:       request.Cluster{Kubeconfig: s.Kubeconfig, ScanContexts: s.InUseContexts},
				Namespaces:    request.ParseList(namespaces),
				Policies:      pols,
				DryRun:        dryRun,
				Engine:        engine(s),
			}
			if builder {
				req.Builder = &request.BuilderLimits{ThresholdPercent: s.BuilderThreshold, MaxBytes: s.BuilderMaxBytes}
			}
			_, err = call[struct{}](cmd, s, req)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&apiURL, "api-url", os.Getenv("CI_API_V4_URL"), "GitLab's API (CI_API_V4_URL)")
	f.StringVar(&project, "project", os.Getenv("CI_PROJECT_PATH"), "the project's path (group/name)")
	f.StringVar(&stagesStorage, "stages-storage", os.Getenv(gitlab.VarStagesStorage), "the stages storage ($CI_REGISTRY_IMAGE/stages)")
	f.StringVar(&namespaces, "namespaces", os.Getenv(executor.VarCleanupNamespaces), "namespaces to look in for images in use when cluster-wide listing is forbidden (comma-separated)")
	f.BoolVar(&dryRun, "dry-run", false, "print the plan, delete nothing")
	f.BoolVar(&builder, "builder", false, "also clean this host's Docker Engine (--docker-host)")
	f.IntVar(&pols.GitCommit.Limit, "git-commit-strategy-limit", pols.GitCommit.Limit, "commit images to keep (-1: no limit)")
	f.IntVar(&pols.GitCommit.ExpiryDays, "git-commit-strategy-expiry-days", pols.GitCommit.ExpiryDays, "days commit images are kept (-1: no limit)")
	f.IntVar(&pols.StagesSignature.Limit, "stages-signature-strategy-limit", pols.StagesSignature.Limit, "stages-signature images to keep (-1: no limit)")
	f.IntVar(&pols.StagesSignature.ExpiryDays, "stages-signature-strategy-expiry-days", pols.StagesSignature.ExpiryDays, "days stages-signature images are kept (-1: no limit)")
	engineFlags(f, s)
	builderFlags(f, s)
	workerFlags(f, s)
	syncFlags(f, s)
	clusterFlags(f, s)
	return cmd
}
