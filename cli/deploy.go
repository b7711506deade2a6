package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/executor"
	"gitlab.com/stagehand/stagehand/gitlab"
	"gitlab.com/stagehand/stagehand/request"
)

// deployFlagValues are `stagehand deploy`'s and `stagehand render`'s own.
type deployFlagValues struct {
	env, namespace, release, chartDir, url string
	sets                                   []string
}

func addDeployFlags(cmd *cobra.Command, d *deployFlagValues) {
	f := cmd.Flags()
	f.StringVar(&d.env, "env", "", "the environment (its slug, as CI_ENVIRONMENT_SLUG: global.env, and the names' [[ env ]])")
	f.StringVar(&d.namespace, "namespace", "", "the namespace (default: the one a job of the environment gets, from werf.yaml's deploy: and project:)")
	f.StringVar(&d.release, "release", "", "the Helm release (default: the one a job of the environment gets)")
	f.StringVar(&d.chartDir, "chart-dir", "", "the chart, within --dir (default: werf.yaml's deploy: helmChartDir, else .helm)")
	f.StringVar(&d.url, "url", "", "the environment's URL (CI_ENVIRONMENT_URL: global.ci_url)")
	f.StringArrayVar(&d.sets, "set", nil, "a value, as helm --set (path.to.key=value); repeatable, applied in order")
}

func deployCommand() *cobra.Command {
	s := defaultSettings()
	var b buildFlags
	var d deployFlagValues
	cmd := &cobra.Command{
		Use:   "deploy --env ENV",
		Short: "Build, then deploy an environment from a checkout, as a deploy job does",
		Long: "What a deploy job does, from an operator's shell: the build (idle when the images are " +
			"published), then the chart with werf's and stagehand's values, into the namespace and " +
			"release a job of --env gets, following the workloads until ready. The published " +
			"references go to stdout as export lines.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := callPrepared[request.Deploy, request.BuildResult](cmd, s, func() (request.Deploy, error) {
				return shellDeployRequest(cmd, s, b, d)
			})
			if err != nil {
				return err
			}
			return printExports(cmd, res)
		},
	}
	addDeployFlags(cmd, &d)
	addBuildFlags(cmd.Flags(), s, &b)
	deployFlags(cmd.Flags(), s)
	return cmd
}

func renderCommand() *cobra.Command {
	s := defaultSettings()
	var b buildFlags
	var d deployFlagValues
	cmd := &cobra.Command{
		Use:   "render --env ENV",
		Short: "Print the manifests a deploy of an environment would apply, with the images filled in",
		Long: "Runs the build a deploy runs (idle when the images are published), then renders the chart " +
			"with the same values and annotations, without a cluster, and prints the manifests (hooks " +
			"last) to stdout, for GitOps tools. Secrets are decrypted as for a deploy: mind where the " +
			"output goes.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := callPrepared[request.Render, request.RenderResult](cmd, s, func() (request.Render, error) {
				req, err := shellDeployRequest(cmd, s, b, d)
				return request.Render{Deploy: req}, err
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), res.Manifest)
			return err
		},
	}
	addDeployFlags(cmd, &d)
	addBuildFlags(cmd.Flags(), s, &b)
	return cmd
}

// shellDeployRequest is an operator's deploy: the shell's build, and the
// environment's names as a job of it gets them.
func shellDeployRequest(cmd *cobra.Command, s *executor.Settings, b buildFlags, d deployFlagValues) (request.Deploy, error) {
	if d.env == "" {
		return request.Deploy{}, fmt.Errorf("give --env (the environment's slug, as CI_ENVIRONMENT_SLUG)")
	}
	build, err := shellBuildRequest(s, b)
	if err != nil {
		return request.Deploy{}, err
	}
	ns, rel := d.namespace, d.release
	if ns == "" || rel == "" {
		names, err := configCall[request.NamesResult](cmd, s, request.ConfigNames{Dir: b.dir, Vars: build.Vars})
		if err != nil {
			return request.Deploy{}, err
		}
		project := b.project
		if project == "" {
			project = repositoryPath(b.repo)
		}
		gitlabName := project[strings.LastIndex(project, "/")+1:]
		dns, drel, err := gitlab.EnvironmentNames(names.Naming, gitlabName, d.env)
		if err != nil {
			return request.Deploy{}, err
		}
		if ns == "" {
			ns = dns
		}
		if rel == "" {
			rel = drel
		}
	}
	sets := map[string]string{}
	for i, line := range d.sets {
		// Applied in name order: the index keeps the flags' order.
		sets[fmt.Sprintf("--set %04d", i)] = line
	}
	return request.Deploy{
		Build:       build,
		Environment: request.Environment{Name: d.env, Namespace: ns, Release: rel, URL: d.url},
		ChartDir:    d.chartDir,
		Cluster:     request.Cluster{Kubeconfig: s.Kubeconfig},
		Sets:        sets,
		PullSecret:  request.PullSecret{From: s.PullSecretFrom},
		Timeout:     s.DeployTimeout,
		Protected:   s.NamespacePolicy().Protected,
	}, nil
}

// printExports prints a build's references as export lines.
func printExports(cmd *cobra.Command, res request.BuildResult) error {
	var vars []gitlab.Var
	for k, v := range res.Exports() {
		vars = append(vars, gitlab.Var{Name: k, Value: v})
	}
	sort.Slice(vars, func(i, j int) bool { return vars[i].Name < vars[j].Name })
	_, err := fmt.Fprint(cmd.OutOrStdout(), gitlab.FormatExports(vars))
	return err
}
