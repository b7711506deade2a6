package executor

import (
	"reflect"
	"testing"
)

func TestServiceAliases(t *testing.T) {
	for _, c := range []struct {
		image, alias string
		want         []string
	}{
		{"postgres:14", "", []string{"postgres"}},
		{"tutum/wordpress:latest", "", []string{"tutum__wordpress", "tutum-wordpress"}},
		{"registry.example.com/db/postgres:14", "db", []string{"db", "registry.example.com__db__postgres", "registry.example.com-db-postgres"}},
		{"redis@sha256:abcd", "cache, kv store", []string{"cache", "kv", "store", "redis"}},
		// A registry's port cannot be in a host name.
		{"127.0.0.1:5000/stagehand/echo:1", "echo", []string{"echo"}},
	} {
		if got := serviceAliases(c.image, c.alias); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %q: %v, want %v", c.image, c.alias, got, c.want)
		}
	}
}
