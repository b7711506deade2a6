package request

import (
	"strings"
	"testing"
)

func TestNamespacePolicy(t *testing.T) {
	def := NamespacePolicy{Protected: append(DefaultProtectedNamespaces, "stagehand-synchronization")}
	for _, c := range []struct {
		name   string
		p      NamespacePolicy
		ns     string
		from   string
		refuse string
	}{
		{"derived", def, "shop-review-x", "", ""},
		{"kube-system", def, "kube-system", "", "protected"},
		{"kube-system by override", NamespacePolicy{Protected: DefaultProtectedNamespaces, AllowOverride: true}, "kube-system", "STAGEHAND_NAMESPACE", "protected"},
		{"synchronization namespace", def, "stagehand-synchronization", "", "protected"},
		{"override refused", def, "shop", "STAGEHAND_NAMESPACE", "does not let jobs choose"},
		{"override allowed", NamespacePolicy{AllowOverride: true}, "shop", "APP_NAMESPACE", ""},
		{"pattern match", NamespacePolicy{Pattern: "shop-.*|review-[a-z0-9-]+"}, "review-x", "", ""},
		{"pattern is whole", NamespacePolicy{Pattern: "shop-.*"}, "evil-shop-x", "", "does not match"},
	} {
		err := c.p.Check(c.ns, c.from)
		if c.refuse == "" && err != nil || c.refuse != "" && (err == nil || !strings.Contains(err.Error(), c.refuse)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.refuse)
		}
	}
	if err := (NamespacePolicy{Pattern: "("}).Check("x", ""); err == nil {
		t.Error("a broken pattern passed")
	}
}
