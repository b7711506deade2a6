package executor

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReports(t *testing.T) {
	dir := t.TempDir()
	exports := map[string]string{"STAGEHAND_IMAGE_APP": "reg/app:main", "STAGEHAND_IMAGE_APP_DIGEST": "sha256:ab", "DYNAMIC_ENVIRONMENT_URL": "https://shop.example.com"}
	written, err := writeReports(map[string]string{"CI_PROJECT_DIR": dir}, exports)
	if err != nil || len(written) != 2 {
		t.Fatalf("%v %v", written, err)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "stagehand.env"))
	if string(env) != "DYNAMIC_ENVIRONMENT_URL=https://shop.example.com\nSTAGEHAND_IMAGE_APP=reg/app:main\nSTAGEHAND_IMAGE_APP_DIGEST=sha256:ab\n" {
		t.Errorf("dotenv:\n%s", env)
	}
	var js map[string]string
	b, _ := os.ReadFile(filepath.Join(dir, "stagehand-report.json"))
	if err := json.Unmarshal(b, &js); err != nil || js["STAGEHAND_IMAGE_APP"] != "reg/app:main" {
		t.Errorf("report: %s %v", b, err)
	}
	if _, err := writeReports(map[string]string{"CI_PROJECT_DIR": dir, "STAGEHAND_DOTENV": "reports/build.env"}, exports); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "reports/build.env")); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"../escape.env", "/etc/x.env", "."} {
		_, err := writeReports(map[string]string{"CI_PROJECT_DIR": dir, "STAGEHAND_DOTENV": bad}, exports)
		if err == nil || !strings.Contains(err.Error(), "within the project directory") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if w, err := writeReports(map[string]string{"CI_PROJECT_DIR": dir}, nil); err != nil || len(w) != 0 {
		t.Errorf("nothing exported: %v %v", w, err)
	}
}
