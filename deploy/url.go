package deploy

import (
	"errors"
	"io"

	yaml "sigs.k8s.io/yaml"
)

// EnvironmentURL is the URL of a release's first Ingress host, https when
// the Ingress has TLS for it; "" when the release has no Ingress host.
func EnvironmentURL(manifest string) string {
	dec := newDocReader([]byte(manifest))
	for {
		doc, err := dec.next()
		if errors.Is(err, io.EOF) {
			return ""
		}
		var obj struct {
			Kind string
			Spec struct {
				Rules []struct{ Host string }
				TLS   []struct{ Hosts []string }
			}
		}
		if yaml.Unmarshal(doc, &obj) != nil || obj.Kind != "Ingress" {
			continue
		}
		for _, r := range obj.Spec.Rules {
			if r.Host == "" || r.Host[0] == '*' {
				continue
			}
			for _, t := range obj.Spec.TLS {
				for _, h := range t.Hosts {
					if h == r.Host {
						return "https://" + r.Host
					}
				}
			}
			return "http://" + r.Host
		}
	}
}
