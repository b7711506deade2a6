package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var code int
	root := New("test", &code)
	var out bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.Execute()
	return out.String(), err
}

// TestSecretCommands: generate a key, encrypt and decrypt a file and a
// values file through the CLI, with the key from WERF_SECRET_KEY and from
// the project's .werf_secret_key; werf's own sample decrypts.
func TestSecretCommands(t *testing.T) {
	key, err := runCLI(t, "", "secret", "generate-key")
	if err != nil || len(strings.TrimSpace(key)) != 32 {
		t.Fatalf("generate-key: %q %v", key, err)
	}
	t.Setenv("WERF_SECRET_KEY", strings.TrimSpace(key))
	t.Setenv("STAGEHAND_SECRET_KEY", "")
	enc, err := runCLI(t, "tls key\n", "secret", "encrypt")
	if err != nil || !strings.HasPrefix(enc, "1000") {
		t.Fatalf("encrypt: %q %v", enc, err)
	}
	dec, err := runCLI(t, enc, "secret", "decrypt")
	if err != nil || dec != "tls key\n" {
		t.Fatalf("decrypt: %q %v", dec, err)
	}
	dir := t.TempDir()
	clear := filepath.Join(dir, "values.yaml")
	os.WriteFile(clear, []byte("db:\n  password: hunter22\n"), 0o644)
	secretValues := filepath.Join(dir, "secret-values.yaml")
	if _, err := runCLI(t, "", "secret", "values", "encrypt", clear, "-o", secretValues); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(secretValues)
	if bytes.Contains(b, []byte("hunter22")) || !bytes.Contains(b, []byte("password: 1000")) {
		t.Errorf("encrypted values:\n%s", b)
	}
	t.Setenv("EDITOR", `sed -i s/hunter22/hunter33/`)
	if _, err := runCLI(t, "", "secret", "values", "edit", secretValues); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "", "secret", "values", "decrypt", secretValues)
	if err != nil || out != "db:\n  password: hunter33\n" {
		t.Errorf("values after edit: %q %v", out, err)
	}

	// werf's sample, with the key from a project's .werf_secret_key.
	t.Setenv("WERF_SECRET_KEY", "")
	os.WriteFile(filepath.Join(dir, ".werf_secret_key"), []byte("82a0f04a09e034421a8978c60bffac87\n"), 0o600)
	out, err = runCLI(t, "10008f2d1c7c1c254b92838919283299b2890fa4eb0f7def5dc582d11e767d547bec\n", "secret", "decrypt", "--dir", dir)
	if err != nil || out != "secret\n" {
		t.Errorf("werf's sample: %q %v", out, err)
	}
	_, err = runCLI(t, enc, "secret", "decrypt", "--dir", dir)
	if err == nil || !strings.Contains(err.Error(), "does not decrypt it") {
		t.Errorf("wrong key: %v", err)
	}
	_, err = runCLI(t, enc, "secret", "decrypt", "--dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "there is no secret key: set WERF_SECRET_KEY") {
		t.Errorf("no key: %v", err)
	}
}
