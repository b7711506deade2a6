package deploy

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"gitlab.com/stagehand/stagehand/worker"
)

// Builder builds a deploy's images first (package stages provides it; a
// deploy never builds anything itself).
// It answers the images and the variables the build exports.
type Builder func(ctx context.Context, req worker.Request, trace io.Writer) ([]Image, map[string]string, error)

// Handlers are the worker operations this package serves.
func Handlers(build Builder) map[string]worker.Handler {
	return map[string]worker.Handler{
		worker.OpDeploy: func(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
			d := req.Deploy
			if d == nil || d.Build == nil {
				return worker.Response{}, fmt.Errorf("%s request without a deploy and its build", worker.OpDeploy)
			}
			images, exports, err := build(ctx, req, trace)
			if err != nil {
				return worker.Response{}, err
			}
			o := options(d, trace)
			o.Values.Images = images
			if o.ChartDir == "" {
				o.ChartDir = DefaultChartDir(d.Build.ProjectDir)
			} else if !filepath.IsAbs(o.ChartDir) {
				o.ChartDir = filepath.Join(d.Build.ProjectDir, o.ChartDir)
			}
			extra, err := EnvValuesFile(o.ChartDir, d.Env)
			if err != nil {
				return worker.Response{}, fmt.Errorf("read values-%s.yaml: %w", d.Env, err)
			}
			if extra != nil {
				o.Values.Files = append(o.Values.Files, extra)
				fmt.Fprintf(trace, "Using values-%s.yaml\n", d.Env)
			}
			return worker.Response{Exports: exports}, Deploy(ctx, o)
		},
		worker.OpDismiss: func(ctx context.Context, req worker.Request, trace io.Writer) (worker.Response, error) {
			if req.Deploy == nil {
				return worker.Response{}, fmt.Errorf("%s request without a deploy", worker.OpDismiss)
			}
			return worker.Response{}, Dismiss(ctx, options(req.Deploy, trace))
		},
	}
}

func options(d *worker.Deploy, trace io.Writer) Options {
	return Options{
		Kubeconfig: d.Kubeconfig, Namespace: d.Namespace, Release: d.Release, ChartDir: d.ChartDir,
		Values:      ValuesInput{Env: d.Env, CIURL: d.CIURL, Namespace: d.Namespace, Sets: d.Sets},
		Annotations: d.Annotations, Registry: d.Registry, DeployUser: d.DeployUser, DeployPassword: d.DeployPassword,
		PullSecretFrom: d.PullSecretFrom, Timeout: d.Timeout, Trace: trace,
	}
}
