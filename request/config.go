package request

import "gitlab.com/stagehand/stagehand/gitlab"

// ConfigNames asks what a project's config says of its environments'
// names (served by stagehand-config).
type ConfigNames struct {
	// Dir is the checkout; Vars the variables its templates see.
	Dir  string
	Vars map[string]string
}

// Op names the operation in the worker protocol.
func (ConfigNames) Op() string { return "config-names" }

// NamesResult is what the config says: nil when the project has no config
// (or one that names nothing).
type NamesResult struct {
	Naming *gitlab.Naming
}

// ConfigRender renders a project's config (`stagehand config render`).
type ConfigRender struct {
	Dir  string
	Vars map[string]string
}

// Op names the operation in the worker protocol.
func (ConfigRender) Op() string { return "config-render" }

// Rendered is a rendered config.
type Rendered struct {
	File     string
	Text     string
	Warnings []string
}

// Plan plans a project's images (`stagehand plan`): their stages in order
// and signatures, with no engine and no registry.
type Plan struct {
	Dir  string
	Vars map[string]string
}

// Op names the operation in the worker protocol.
func (Plan) Op() string { return "plan" }

// PlanResult is a plan as `stagehand plan` prints it.
type PlanResult struct {
	File    string
	Project string
	Images  []PlannedImage
	// Unresolved says what the plan could not know without a registry or
	// the network (fromLatest bases, remote repositories): the stages
	// that depend on them carry signatures of their names, not of their
	// contents.
	Unresolved []string
	Notes      []string
}

// PlannedImage is an image or artifact of a plan.
type PlannedImage struct {
	Name     string
	Artifact bool
	Stages   []PlannedStage
}

// PlannedStage is one stage of a plan.
type PlannedStage struct {
	Name      string
	Signature string
}

// Programs of the heavy half besides stagehand-worker (see
// worker.ProgramOf).
const (
	// ConfigProgram reads and plans a project's config: werf's template
	// functions (sprig) cost every program that links them ~7 ms a start.
	ConfigProgram = "stagehand-config"
	// DeployProgram deploys and dismisses, and cleans up: it links Helm,
	// which costs ~70 ms a start, and the GitLab API client.
	DeployProgram = "stagehand-deploy"
)

// Program names the program that serves the config operations.
func (ConfigNames) Program() string  { return ConfigProgram }
func (ConfigRender) Program() string { return ConfigProgram }
func (Plan) Program() string         { return ConfigProgram }
