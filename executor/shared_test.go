package executor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/stagehand/stagehand/gitlab"
)

func TestJobKubeconfigIsTheJobsOwnFile(t *testing.T) {
	e, _, _ := newTestExecutor(t, map[string]string{"CI_PROJECT_PATH": "group/sample"})
	e.Settings.BuildsRoot = t.TempDir()
	a := e.actionContext(gitlab.Env{})
	fileVar := filepath.Join(a.BuildsDir, "group", "sample.tmp", "KUBECONFIG")
	if err := os.MkdirAll(filepath.Dir(fileVar), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fileVar, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(t.TempDir(), "admin.conf")
	os.WriteFile(host, []byte("x"), 0o600)
	for _, c := range []struct {
		value, err string
	}{
		{fileVar, ""},
		{host, "is not a file of this job"},
		{filepath.Join(a.BuildsDir, "group", "other.tmp", "KUBECONFIG"), "is not a file of this job"},
		{filepath.Join(a.BuildsDir, "group", "sample.tmp", "..", "..", "..", "x"), "is not a file of this job"},
		{"apiVersion: v1\nkind: Config\n", ""},
	} {
		a.Job.Vars[VarKubeconfig] = c.value
		a.Job.Vars[VarKubeContext] = "agents:prod"
		cl, err := jobCluster(a)
		if c.err == "" && (err != nil || cl.Kubeconfig == "" || cl.Context != "agents:prod") || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("KUBECONFIG=%q: %+v %v, want %q", c.value, cl, err, c.err)
		}
	}
}

func TestAJobChoosesNoOtherSynchronizationNamespace(t *testing.T) {
	e, _, _ := newTestExecutor(t, nil)
	e.Settings.Synchronization = "kubernetes://stagehand-synchronization"
	a := e.actionContext(gitlab.Env{})
	for spec, ok := range map[string]bool{"none": true, ":local": true, "kubernetes://stagehand-synchronization": true, "kubernetes://kube-system": false} {
		a.Job.Vars[VarSynchronization] = spec
		_, err := jobLocks(a, "job")
		if ok != (err == nil) {
			t.Errorf("%s: %v", spec, err)
		}
	}
}

func TestKubeNamespaceIsIgnoredUnlessTheRunnerAllowsOverrides(t *testing.T) {
	vars := map[string]string{"CI_ENVIRONMENT_NAME": "production", "CI_ENVIRONMENT_SLUG": "production", gitlab.VarKubeNamespace: "sample-123-production"}
	e, _, _ := newTestExecutor(t, vars)
	env, err := e.derive()
	if err != nil || env.Namespace != "sample-production" || env.NamespaceFrom != "" {
		t.Errorf("not allowed: %q from %q, %v", env.Namespace, env.NamespaceFrom, err)
	}
	e.Settings.AllowNamespaceOverride = true
	env, err = e.derive()
	if err != nil || env.Namespace != "sample-123-production" || env.NamespaceFrom != gitlab.VarKubeNamespace {
		t.Errorf("allowed: %q from %q, %v", env.Namespace, env.NamespaceFrom, err)
	}
}
