package executor

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"gitlab.com/stagehand/stagehand/fault"
)

func TestLoadJobDecodesCustomEnv(t *testing.T) {
	j, err := LoadJob([]string{
		"CUSTOM_ENV_CI_JOB_ID=42",
		"CUSTOM_ENV_CI_SERVER_HOST=gitlab.example.com",
		"CUSTOM_ENV_WITH_EQUALS=a=b=c",
		"CUSTOM_ENV_EMPTY=",
		"BUILD_FAILURE_EXIT_CODE=11",
		"SYSTEM_FAILURE_EXIT_CODE=12",
		"BUILD_EXIT_CODE_FILE=/tmp/x/build_exit_code",
		"TMPDIR=/tmp/custom-executor1",
		"PATH=/usr/bin",
		"garbage-without-equals",
	})
	if err != nil {
		t.Fatal(err)
	}
	if j.Vars["CI_JOB_ID"] != "42" || j.Vars["WITH_EQUALS"] != "a=b=c" {
		t.Errorf("vars = %v", j.Vars)
	}
	if v, ok := j.Vars["EMPTY"]; !ok || v != "" {
		t.Errorf("empty variable lost: %q %v", v, ok)
	}
	for _, kv := range j.HostEnv {
		if strings.HasPrefix(kv, customEnvPrefix) {
			t.Errorf("job variable in host env: %s", kv)
		}
	}
	if j.BuildFailureCode != 11 || j.SystemFailureCode != 12 || j.BuildExitCodeFile != "/tmp/x/build_exit_code" {
		t.Errorf("codes %d %d file %q", j.BuildFailureCode, j.SystemFailureCode, j.BuildExitCodeFile)
	}
	if j.Key() != "gitlab.example.com-42" {
		t.Errorf("key %q", j.Key())
	}
	if j.StateDir() != "/tmp/custom-executor1/stagehand" {
		t.Errorf("state dir %q", j.StateDir())
	}
}

func TestLoadJobErrors(t *testing.T) {
	tests := []struct {
		env  []string
		want string
	}{
		{[]string{}, "TMPDIR is not set"},
		{[]string{"TMPDIR=relative"}, "not an absolute path"},
		{[]string{"TMPDIR=/t", "BUILD_FAILURE_EXIT_CODE=x"}, "BUILD_FAILURE_EXIT_CODE"},
		{[]string{"TMPDIR=/t", "SYSTEM_FAILURE_EXIT_CODE=300"}, "SYSTEM_FAILURE_EXIT_CODE"},
	}
	for _, tt := range tests {
		_, err := LoadJob(tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadJob(%v) = %v, want error with %q", tt.env, err, tt.want)
		}
	}
}

func TestExitCode(t *testing.T) {
	j := &Job{BuildFailureCode: 1, SystemFailureCode: 2}
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&ScriptExit{Code: 3}, 1},
		{fmt.Errorf("wrapped: %w", &ScriptExit{Code: 3}), 1},
		{fault.Jobf("bad variable"), 1},
		{fmt.Errorf("context: %w", fault.Jobf("bad")), 1},
		{fault.System(errors.New("engine down")), 2},
		{errors.New("unmarked"), 2},
	}
	for _, tt := range tests {
		if got := j.ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestSettingsValidate(t *testing.T) {
	ok := DefaultSettings()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Settings){
		"--builds-root":         func(s *Settings) { s.BuildsRoot = "rel" },
		"--cache-root":          func(s *Settings) { s.CacheRoot = "" },
		"--pull-policy":         func(s *Settings) { s.PullPolicy = "sometimes" },
		"--stop-timeout":        func(s *Settings) { s.StopTimeout = 0 },
		"--git-cache-dir":       func(s *Settings) { s.GitCacheDir = "" },
		"--mounts-dir":          func(s *Settings) { s.MountsDir = "mounts" },
		"--allowed-mount-paths": func(s *Settings) { s.AllowedMountPaths = []string{"/srv/cache", "/"} },
	} {
		s := DefaultSettings()
		mut(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestStages(t *testing.T) {
	for stage, want := range map[string][2]bool{
		"prepare_script": {false, false}, "get_sources": {false, false}, "restore_cache": {false, false},
		"build_script": {true, true}, "step_script": {true, true}, "step_release": {true, false},
		"after_script": {true, false}, "archive_cache": {false, false}, "upload_artifacts_on_success": {false, false},
		"cleanup_file_variables": {false, false},
	} {
		if userStage(stage) != want[0] || scriptStage(stage) != want[1] {
			t.Errorf("%s: user %v script %v, want %v", stage, userStage(stage), scriptStage(stage), want)
		}
	}
}
