package executor

import (
	"strings"
	"testing"
)

func TestChooseAction(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		want ActionKind
		err  bool
	}{
		{"plain job", map[string]string{"CI_JOB_STAGE": "test"}, ActionNone, false},
		{"build stage", map[string]string{"CI_JOB_STAGE": "build"}, ActionBuild, false},
		{"environment start", map[string]string{"CI_JOB_STAGE": "deploy", "CI_ENVIRONMENT_NAME": "review/x"}, ActionDeploy, false},
		{"environment explicit start", map[string]string{"CI_ENVIRONMENT_NAME": "prod", "CI_ENVIRONMENT_ACTION": "start"}, ActionDeploy, false},
		{"environment stop", map[string]string{"CI_ENVIRONMENT_NAME": "review/x", "CI_ENVIRONMENT_ACTION": "stop"}, ActionDismiss, false},
		{"environment prepare does not deploy", map[string]string{"CI_ENVIRONMENT_NAME": "prod", "CI_ENVIRONMENT_ACTION": "prepare"}, ActionNone, false},
		{"environment verify in build stage builds", map[string]string{"CI_JOB_STAGE": "build", "CI_ENVIRONMENT_NAME": "prod", "CI_ENVIRONMENT_ACTION": "verify"}, ActionBuild, false},
		{"build stage with environment deploys", map[string]string{"CI_JOB_STAGE": "build", "CI_ENVIRONMENT_NAME": "prod"}, ActionDeploy, false},
		{"scheduled cleanup job cleans", map[string]string{"CI_PIPELINE_SOURCE": "schedule", "CI_JOB_NAME": "cleanup", "CI_JOB_STAGE": "test"}, ActionCleanup, false},
		{"scheduled job of stage cleanup cleans", map[string]string{"CI_PIPELINE_SOURCE": "schedule", "CI_JOB_NAME": "registry", "CI_JOB_STAGE": "cleanup"}, ActionCleanup, false},
		{"scheduled build job builds", map[string]string{"CI_PIPELINE_SOURCE": "schedule", "CI_JOB_NAME": "build", "CI_JOB_STAGE": "build"}, ActionBuild, false},
		{"scheduled test job tests", map[string]string{"CI_PIPELINE_SOURCE": "schedule", "CI_JOB_NAME": "unit", "CI_JOB_STAGE": "test"}, ActionNone, false},
		{"scheduled deploy job deploys", map[string]string{"CI_PIPELINE_SOURCE": "schedule", "CI_JOB_STAGE": "deploy", "CI_ENVIRONMENT_NAME": "prod"}, ActionDeploy, false},
		{"cleanup job outside a schedule does not clean", map[string]string{"CI_PIPELINE_SOURCE": "push", "CI_JOB_NAME": "cleanup", "CI_JOB_STAGE": "cleanup"}, ActionNone, false},
		{"override cleans anywhere", map[string]string{"CI_PIPELINE_SOURCE": "push", VarAction: "cleanup"}, ActionCleanup, false},
		{"override wins over schedule", map[string]string{"CI_PIPELINE_SOURCE": "schedule", VarAction: "none"}, ActionNone, false},
		{"override is case-insensitive", map[string]string{VarAction: "Deploy"}, ActionDeploy, false},
		{"override build", map[string]string{"CI_JOB_STAGE": "test", VarAction: "build"}, ActionBuild, false},
		{"override dismiss", map[string]string{VarAction: "dismiss"}, ActionDismiss, false},
		{"override cleanup", map[string]string{VarAction: "cleanup"}, ActionCleanup, false},
		{"empty override ignored", map[string]string{VarAction: "", "CI_JOB_STAGE": "build"}, ActionBuild, false},
		{"unknown override", map[string]string{VarAction: "publish"}, "", true},
		{"push pipeline, test stage", map[string]string{"CI_PIPELINE_SOURCE": "push", "CI_JOB_STAGE": "test"}, ActionNone, false},
		{"no variables", map[string]string{}, ActionNone, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseAction(tt.vars)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err != nil {
				if want := VarAction; !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not name %s", err, want)
				}
				return
			}
			if got != tt.want {
				t.Fatalf("ChooseAction = %q, want %q", got, tt.want)
			}
		})
	}
}
