package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/request"
)

// Dismiss removes an environment: its release, then its namespace, and
// waits until the namespace is gone. It never creates anything (werf
// #3529 re-created the namespace it had just deleted). An environment
// that does not exist is dismissed with a note.
func Dismiss(ctx context.Context, o request.Dismiss, trace io.Writer) error {
	start := time.Now()
	c, err := Connect(ctx, o.Cluster)
	if err != nil {
		return err
	}
	if err := checkProtected(o.Namespace, o.Protected); err != nil {
		return err
	}
	ns, err := c.client.CoreV1().Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		fmt.Fprintf(trace, "Namespace %s does not exist: environment already dismissed, nothing to do\n", o.Namespace)
		return nil
	}
	if err != nil {
		return apiError(err, "read namespace %s", o.Namespace)
	}
	// Only the project's own namespace goes (or one handed to it).
	if err := c.claim(ctx, ns, o.Owner, trace); err != nil {
		return err
	}
	if ns.Status.Phase != "Terminating" {
		lctx, unlock, _, err := holdRelease(ctx, o.Locks, o.Namespace, o.Release, trace)
		if err != nil {
			return err
		}
		defer unlock()
		ctx = lctx
		cfg, err := c.helm(o.Namespace, trace)
		if err != nil {
			return fault.System(err)
		}
		un := action.NewUninstall(cfg)
		un.Timeout = o.Timeout
		if _, err := un.Run(o.Release); errors.Is(err, driver.ErrReleaseNotFound) {
			fmt.Fprintf(trace, "Release %s is not installed in %s\n", o.Release, o.Namespace)
		} else if err != nil {
			return fault.System(fmt.Errorf("uninstall release %s: %w", o.Release, err))
		} else {
			fmt.Fprintf(trace, "Uninstalled release %s\n", o.Release)
		}
		if err := c.client.CoreV1().Namespaces().Delete(ctx, o.Namespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return apiError(err, "delete namespace %s", o.Namespace)
		}
	}
	fmt.Fprintf(trace, "Deleting namespace %s; waiting until it is gone (up to %s)\n", o.Namespace, o.Timeout)
	if err := c.waitNamespaceGone(ctx, o.Namespace, o.Timeout); err != nil {
		return err
	}
	fmt.Fprintf(trace, "Environment dismissed: namespace %s is gone (%s)\n", o.Namespace, time.Since(start).Round(time.Millisecond))
	return nil
}

// waitNamespaceGone watches the namespace until it is deleted.
func (c *Cluster) waitNamespaceGone(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for {
		list, err := c.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return apiError(err, "watch namespace %s", name)
		}
		if len(list.Items) == 0 {
			return nil
		}
		w, err := c.client.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return apiError(err, "watch namespace %s", name)
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				w.Stop()
				return nil
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	return fault.System(fmt.Errorf("namespace %s is still terminating after %s (finalizers? is kube-controller-manager running?)", name, timeout))
}
