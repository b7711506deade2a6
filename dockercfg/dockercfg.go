// Package dockercfg reads and writes a DOCKER_CONFIG directory's
// config.json the way `docker login` stores credentials, so that the job's
// script, the Docker CLI and stagehand share one login.
package dockercfg

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// file is the part of config.json stagehand uses.
type file struct {
	Auths map[string]auth `json:"auths"`
}

type auth struct {
	Auth string `json:"auth"`
}

// Write creates dir (0700, even when it existed) with a config.json (0600)
// holding one login to registry, or none when registry is empty.
func Write(dir, registry, user, password string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create DOCKER_CONFIG %s: %w", dir, err)
	}
	// MkdirAll keeps an existing directory's mode; a config left by an
	// earlier attempt must not be readable by others either.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod DOCKER_CONFIG %s: %w", dir, err)
	}
	cfg := file{Auths: map[string]auth{}}
	if registry != "" {
		cfg.Auths[registry] = auth{Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "config.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// read loads dir's config.json; an absent one is an empty config.
func read(dir string) (file, string, error) {
	path := filepath.Join(dir, "config.json")
	var cfg file
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, path, nil
	}
	if err != nil {
		return cfg, path, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, path, fmt.Errorf("parse %s: %w", path, err)
	}
	return cfg, path, nil
}

// Hosts lists the registries dir has logins for.
func Hosts(dir string) ([]string, error) {
	cfg, _, err := read(dir)
	if err != nil {
		return nil, err
	}
	hosts := make([]string, 0, len(cfg.Auths))
	for h := range cfg.Auths {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts, nil
}

// Credentials returns the login stored in dir for registry host; ok is
// false when there is none (or no config at all).
func Credentials(dir, host string) (user, password string, ok bool, err error) {
	cfg, path, err := read(dir)
	if err != nil {
		return "", "", false, err
	}
	entry, found := cfg.Auths[host]
	if !found || entry.Auth == "" {
		return "", "", false, nil
	}
	raw, err := base64.StdEncoding.DecodeString(entry.Auth)
	if err != nil {
		return "", "", false, fmt.Errorf("%s: the auth of %s is not base64", path, host)
	}
	user, password, _ = strings.Cut(string(raw), ":")
	return user, password, true, nil
}

// RegistryHost is the registry part of an image reference ("docker.io" for
// Docker Hub's short names).
func RegistryHost(ref string) string {
	first, _, found := strings.Cut(ref, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return "docker.io"
}
