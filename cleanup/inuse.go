package cleanup

import (
	"context"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// lister lists one kind of workload in a namespace ("" = all) as the pod
// specs it runs.
type lister struct {
	kind string
	list func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error)
}

type named struct {
	ns, name string
	spec     *corev1.PodSpec
}

var listers = []lister{
	{"pod", func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []named
		for i := range l.Items {
			out = append(out, named{l.Items[i].Namespace, l.Items[i].Name, &l.Items[i].Spec})
		}
		return out, nil
	}},
	{"replicaset", func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		l, err := c.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []named
		for i := range l.Items {
			out = append(out, named{l.Items[i].Namespace, l.Items[i].Name, &l.Items[i].Spec.Template.Spec})
		}
		return out, nil
	}},
	{"replicationcontroller", func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		l, err := c.CoreV1().ReplicationControllers(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []named
		for i := range l.Items {
			if l.Items[i].Spec.Template != nil {
				out = append(out, named{l.Items[i].Namespace, l.Items[i].Name, &l.Items[i].Spec.Template.Spec})
			}
		}
		return out, nil
	}},
	{"deployment", func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		l, err := c.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []named
		for i := range l.Items {
			out = append(out, named{l.Items[i].Namespace, l.Items[i].Name, &l.Items[i].Spec.Template.Spec})
		}
		return out, nil
	}},
	{"statefulset", func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		l, err := c.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []named
		for i := range l.Items {
			out = append(out, named{l.Items[i].Namespace, l.Items[i].Name, &l.Items[i].Spec.Template.Spec})
		}
		return out, nil
	}},
	{"daemonset", func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		l, err := c.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []named
		for i := range l.Items {
			out = append(out, named{l.Items[i].Namespace, l.Items[i].Name, &l.Items[i].Spec.Template.Spec})
		}
		return out, nil
	}},
	{"job", func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		l, err := c.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []named
		for i := range l.Items {
			out = append(out, named{l.Items[i].Namespace, l.Items[i].Name, &l.Items[i].Spec.Template.Spec})
		}
		return out, nil
	}},
	{"cronjob", func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		l, err := c.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []named
		for i := range l.Items {
			out = append(out, named{l.Items[i].Namespace, l.Items[i].Name, &l.Items[i].Spec.JobTemplate.Spec.Template.Spec})
		}
		return out, nil
	}},
}

// AddImage records that who uses image (repo:tag, repo@digest or
// repo:tag@digest).
func (u *InUse) AddImage(image, who string) {
	if u.ByRef == nil {
		u.ByRef, u.ByDigest = map[string]string{}, map[string]string{}
	}
	ref, digest, _ := strings.Cut(image, "@")
	if digest != "" {
		if _, ok := u.ByDigest[digest]; !ok {
			u.ByDigest[digest] = who
		}
	}
	// A reference without a tag (repo@digest) names no tag.
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		if _, ok := u.ByRef[ref]; !ok {
			u.ByRef[ref] = who
		}
	}
}

func (u *InUse) addSpec(kind string, n named) {
	for _, c := range n.spec.InitContainers {
		u.AddImage(c.Image, fmt.Sprintf("%s %s/%s (initContainer %s)", kind, n.ns, n.name, c.Name))
	}
	for _, c := range n.spec.Containers {
		u.AddImage(c.Image, fmt.Sprintf("%s %s/%s (container %s)", kind, n.ns, n.name, c.Name))
	}
	for _, c := range n.spec.EphemeralContainers {
		u.AddImage(c.Image, fmt.Sprintf("%s %s/%s (ephemeral container %s)", kind, n.ns, n.name, c.Name))
	}
}

// ImagesInUse lists the images every workload of the cluster uses. When
// listing across namespaces is forbidden, it lists the given namespaces
// instead and says so in the trace (werf #2167 needed cluster-wide RBAC).
func ImagesInUse(ctx context.Context, c kubernetes.Interface, fallback []string, trace io.Writer) (InUse, error) {
	var u InUse
	u.ByRef, u.ByDigest = map[string]string{}, map[string]string{}
	scoped := false
	for _, l := range listers {
		items, err := l.list(ctx, c, "")
		if apierrors.IsForbidden(err) {
			scoped = true
			break
		}
		if err != nil {
			return u, fmt.Errorf("list %ss across namespaces: %w", l.kind, err)
		}
		for _, n := range items {
			u.addSpec(l.kind, n)
		}
	}
	if !scoped {
		return u, nil
	}
	if len(fallback) == 0 {
		return u, fmt.Errorf("the cluster credentials may not list workloads across namespaces, and no namespaces are given to look in instead (STAGEHAND_CLEANUP_NAMESPACES): without knowing the images in use, nothing is deleted")
	}
	fmt.Fprintf(trace, "WARNING: the cluster credentials may not list workloads across namespaces; looking only in %s for images in use\n", strings.Join(fallback, ", "))
	u.ByRef, u.ByDigest = map[string]string{}, map[string]string{}
	for _, ns := range fallback {
		for _, l := range listers {
			items, err := l.list(ctx, c, ns)
			if err != nil {
				return u, fmt.Errorf("list %ss in namespace %s: %w", l.kind, ns, err)
			}
			for _, n := range items {
				u.addSpec(l.kind, n)
			}
		}
	}
	return u, nil
}
