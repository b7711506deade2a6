// Package registry is how stagehand talks to container registries through
// go-containerregistry: the job's logins, the options every call shares,
// and retries of what a registry fails for a moment. Builds (package
// stages) and cleanup use it alike.
package registry

import (
	"context"
	"errors"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"gitlab.com/stagehand/stagehand/dockercfg"
)

// Keychain gives go-containerregistry the logins of a DOCKER_CONFIG
// directory (the job's, written by the prepare hook); anonymous when it
// has none for a registry.
type Keychain struct{ Dir string }

var _ authn.Keychain = Keychain{}

// Resolve implements authn.Keychain.
func (k Keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if k.Dir == "" {
		return authn.Anonymous, nil
	}
	user, pass, ok, err := dockercfg.Credentials(k.Dir, r.RegistryStr())
	if err != nil {
		return nil, err
	}
	if !ok {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: user, Password: pass}, nil
}

// Options are the options every registry call of one operation uses: the
// logins of dockerConfig, four parallel transfers, and small answers read
// whole (see wholeBodies). base is the transport (nil: the default; tests
// count requests with their own).
func Options(ctx context.Context, dockerConfig string, base http.RoundTripper) []remote.Option {
	if base == nil {
		base = remote.DefaultTransport
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(Keychain{Dir: dockerConfig}), remote.WithJobs(4),
		remote.WithTransport(wholeBodies{base})}
}

// IsNotFound tells a registry's answer that the repository, tag or
// manifest does not exist.
func IsNotFound(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		if te.StatusCode == http.StatusNotFound {
			return true
		}
		for _, d := range te.Errors {
			if d.Code == transport.NameUnknownErrorCode || d.Code == transport.ManifestUnknownErrorCode {
				return true
			}
		}
	}
	return false
}
