package executor

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// registryUser is the user GitLab's registry accepts with CI_JOB_TOKEN.
const registryUser = "gitlab-ci-token"

type dockerConfigFile struct {
	Auths map[string]dockerAuth `json:"auths"`
}

type dockerAuth struct {
	Auth string `json:"auth"`
}

// writeDockerConfig creates the job's private DOCKER_CONFIG (0700, file
// 0600) holding the login to CI_REGISTRY, as `docker login` would store it.
// It returns the registry it logged in to ("" when the job has no registry).
func writeDockerConfig(dir string, vars map[string]string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create DOCKER_CONFIG %s: %w", dir, err)
	}
	// MkdirAll keeps an existing directory's mode; a config left by an
	// earlier attempt must not be readable by others either.
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("chmod DOCKER_CONFIG %s: %w", dir, err)
	}
	cfg := dockerConfigFile{Auths: map[string]dockerAuth{}}
	reg, token := vars["CI_REGISTRY"], vars["CI_JOB_TOKEN"]
	if reg != "" && token != "" {
		cfg.Auths[reg] = dockerAuth{Auth: base64.StdEncoding.EncodeToString([]byte(registryUser + ":" + token))}
	} else {
		reg = ""
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "config.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return reg, nil
}
