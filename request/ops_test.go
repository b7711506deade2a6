package request

import "testing"

func TestExportName(t *testing.T) {
	for in, want := range map[string]string{
		"":             "STAGEHAND_IMAGE",
		"backend":      "STAGEHAND_IMAGE_BACKEND",
		"web-ui":       "STAGEHAND_IMAGE_WEB_UI",
		"api.v2/admin": "STAGEHAND_IMAGE_API_V2_ADMIN",
		"Ünïcode":      "STAGEHAND_IMAGE___N__CODE",
	} {
		if got := ExportName(in); got != want {
			t.Errorf("ExportName(%q) = %q, want %q", in, got, want)
		}
	}
}
