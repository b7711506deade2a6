package executor

import (
	"context"
	"regexp"
	"strings"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/request"
	"gitlab.com/stagehand/stagehand/worker"
)

// hostName is what /etc/hosts takes as a name.
var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// serviceAliases are the names a job reaches a service by: its `alias:`
// (several, separated by spaces or commas), then the docker executor's
// two names from the image without its tag or digest, `/` made `__` and
// `-` (registry.example.com/db/postgres:14 → registry.example.com__db__postgres,
// registry.example.com-db-postgres). Names /etc/hosts cannot hold (a
// registry's port) are left out.
func serviceAliases(image, alias string) []string {
	var out []string
	add := func(n string) {
		if !hostName.MatchString(n) {
			return
		}
		for _, o := range out {
			if o == n {
				return
			}
		}
		out = append(out, n)
	}
	for _, a := range strings.FieldsFunc(alias, func(r rune) bool { return r == ' ' || r == ',' }) {
		add(a)
	}
	name, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	add(strings.ReplaceAll(name, "/", "__"))
	add(strings.ReplaceAll(name, "/", "-"))
	return out
}

// jobServices is the request that starts the job's services: each with
// the job's variables and its own, its pull policies within the runner's.
func (e *Executor) jobServices() (request.JobServices, error) {
	r := request.JobServices{Engine: e.engine(), JobKey: e.Job.Key(), Timeout: e.Settings.ServicesTimeout}
	base := envList(e.Job.Vars)
	for _, s := range e.Job.Services {
		if s.Name == "" {
			return r, fault.Jobf("a service has no image name")
		}
		policies, err := request.PullPolicies(s.PullPolicy, e.Settings.PullPolicy, e.Settings.AllowedPullPolicies)
		if err != nil {
			return r, fault.Jobf("service %s: %w", s.Name, err)
		}
		env := append([]string{}, base...)
		for _, v := range s.Variables {
			env = append(env, v.Key+"="+v.Value)
		}
		r.Services = append(r.Services, request.Service{
			Image: s.Name, Aliases: serviceAliases(s.Name, s.Alias),
			Entrypoint: s.Entrypoint, OverrideEntrypoint: s.Entrypoint != nil, Command: s.Command,
			Env: env, PullPolicies: policies,
		})
	}
	return r, nil
}

// startServices starts the job's services (prepare), for an image job.
func (e *Executor) startServices(ctx context.Context) error {
	if len(e.Job.Services) == 0 {
		return nil
	}
	if e.Job.Image() == "" {
		return fault.Jobf("the job has services: but no image:; services run beside the job's container, so give the job an image")
	}
	r, err := e.jobServices()
	if err != nil {
		return err
	}
	_, err = worker.Call[request.ServicesStarted](ctx, e.worker(), r)
	return err
}

// jobNetwork is the network mode of the job's containers: its services'
// namespace when it has services, else the engine's.
func (e *Executor) jobNetwork() string {
	if len(e.Job.Services) == 0 {
		return ""
	}
	return "container:" + request.ServiceContainer(e.Job.Key(), 0)
}
