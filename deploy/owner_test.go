package deploy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/stagehand/stagehand/request"
)

func TestOwnershipOf(t *testing.T) {
	ns := func(name string, ann map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	}
	me := request.Owner{ProjectID: "42", ProjectPath: "group/shop"}
	for _, c := range []struct {
		name string
		ns   *corev1.Namespace
		o    request.Owner
		want ownership
		why  string
	}{
		{"ours", ns("shop-review", map[string]string{AnnotationProjectID: "42"}), me, owned, ""},
		{"another project's", ns("other-prod", map[string]string{AnnotationProjectID: "7", AnnotationProjectPath: "group/other"}), me, foreign, "belongs to project group/other (id 7)"},
		{"another project's, even when adopt is set", ns("other-prod", map[string]string{AnnotationProjectID: "7", AnnotationAdopt: "42"}), me, foreign, "id 7"},
		{"nobody's", ns("legacy", nil), me, foreign, "kubectl annotate namespace legacy stagehand.io/adopt-project-id=42"},
		{"handed over by an operator", ns("legacy", map[string]string{AnnotationAdopt: "42"}), me, adoptable, "an operator annotated it"},
		{"handed to another project", ns("legacy", map[string]string{AnnotationAdopt: "7"}), me, foreign, "not created by stagehand"},
		{"the runner adopts werf's", ns("shop-production", nil), request.Owner{ProjectID: "42", Adopt: "shop-.*"}, adoptable, "the runner adopts"},
		{"the runner's pattern is whole", ns("evil-shop-production", nil), request.Owner{ProjectID: "42", Adopt: "shop-.*"}, foreign, "not created by stagehand"},
	} {
		got, why := ownershipOf(c.ns, c.o)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%s: %v %q, want %v %q", c.name, got, why, c.want, c.why)
		}
	}
	if err := checkProtected("kube-system", request.DefaultProtectedNamespaces); err == nil {
		t.Error("kube-system is not protected")
	}
}
