package kubeconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const twoContexts = `apiVersion: v1
kind: Config
clusters:
- name: one
  cluster: {server: "https://one.example.com:6443"}
- name: two
  cluster: {server: "https://two.example.com:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: group/agents:staging
  context: {cluster: one, user: u}
- name: group/agents:production
  context: {cluster: two, user: u}
current-context: group/agents:staging
`

func TestContextSelection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(twoContexts), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := RESTConfig(path, "")
	if err != nil || rc.Host != "https://one.example.com:6443" {
		t.Fatalf("current context: %v %v", rc, err)
	}
	rc, err = RESTConfig(path, "group/agents:production")
	if err != nil || rc.Host != "https://two.example.com:6443" {
		t.Fatalf("KUBE_CONTEXT: %v %v", rc, err)
	}
	_, err = RESTConfig(path, "group/agents:nope")
	if err == nil || !strings.Contains(err.Error(), "its contexts: group/agents:production, group/agents:staging") {
		t.Errorf("a wrong context: %v", err)
	}
	all, err := AllContexts(path)
	if err != nil || strings.Join(all, " ") != "group/agents:production group/agents:staging" {
		t.Errorf("AllContexts = %v, %v", all, err)
	}
}
