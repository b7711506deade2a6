package dockercfg

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAndCredentials(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "docker")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, "registry.example.com:5000", "gitlab-ci-token", "tok:en"); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "config.json"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", path, st.Mode().Perm(), want)
		}
	}
	user, pass, ok, err := Credentials(dir, "registry.example.com:5000")
	if err != nil || !ok || user != "gitlab-ci-token" || pass != "tok:en" {
		t.Errorf("Credentials = %q %q %v %v", user, pass, ok, err)
	}
	if _, _, ok, err := Credentials(dir, "other.example.com"); ok || err != nil {
		t.Errorf("other registry: ok %v err %v", ok, err)
	}
	if _, _, ok, err := Credentials(t.TempDir(), "x"); ok || err != nil {
		t.Errorf("no config: ok %v err %v", ok, err)
	}
	if err := Write(dir, "", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := Credentials(dir, "registry.example.com:5000"); ok {
		t.Error("a config without a registry still has a login")
	}
}

func TestRegistryHost(t *testing.T) {
	for ref, want := range map[string]string{
		"alpine":                              "docker.io",
		"library/alpine:3":                    "docker.io",
		"127.0.0.1:5000/stagehand/x:1":        "127.0.0.1:5000",
		"registry.example.com/g/p@sha256:abc": "registry.example.com",
		"localhost/x":                         "localhost",
	} {
		if got := RegistryHost(ref); got != want {
			t.Errorf("RegistryHost(%q) = %q, want %q", ref, got, want)
		}
	}
}
