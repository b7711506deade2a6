package cleanup

import (
	"context"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
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

// listerOf makes a lister from a kind's List call and where its pod spec is.
func listerOf[T any](kind string, list func(ctx context.Context, c kubernetes.Interface, ns string) ([]T, error), spec func(*T) *corev1.PodSpec) lister {
	return lister{kind, func(ctx context.Context, c kubernetes.Interface, ns string) ([]named, error) {
		items, err := list(ctx, c, ns)
		if err != nil {
			return nil, err
		}
		out := make([]named, 0, len(items))
		for i := range items {
			if ps := spec(&items[i]); ps != nil {
				m := any(&items[i]).(metav1.Object)
				out = append(out, named{m.GetNamespace(), m.GetName(), ps})
			}
		}
		return out, nil
	}}
}

var all = metav1.ListOptions{}

var listers = []lister{
	listerOf("pod", func(ctx context.Context, c kubernetes.Interface, ns string) ([]corev1.Pod, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, all)
		return items(err, func() []corev1.Pod { return l.Items })
	}, func(p *corev1.Pod) *corev1.PodSpec { return &p.Spec }),
	listerOf("replicaset", func(ctx context.Context, c kubernetes.Interface, ns string) ([]appsv1.ReplicaSet, error) {
		l, err := c.AppsV1().ReplicaSets(ns).List(ctx, all)
		return items(err, func() []appsv1.ReplicaSet { return l.Items })
	}, func(r *appsv1.ReplicaSet) *corev1.PodSpec { return &r.Spec.Template.Spec }),
	listerOf("replicationcontroller", func(ctx context.Context, c kubernetes.Interface, ns string) ([]corev1.ReplicationController, error) {
		l, err := c.CoreV1().ReplicationControllers(ns).List(ctx, all)
		return items(err, func() []corev1.ReplicationController { return l.Items })
	}, func(r *corev1.ReplicationController) *corev1.PodSpec {
		if r.Spec.Template == nil {
			return nil
		}
		return &r.Spec.Template.Spec
	}),
	listerOf("deployment", func(ctx context.Context, c kubernetes.Interface, ns string) ([]appsv1.Deployment, error) {
		l, err := c.AppsV1().Deployments(ns).List(ctx, all)
		return items(err, func() []appsv1.Deployment { return l.Items })
	}, func(d *appsv1.Deployment) *corev1.PodSpec { return &d.Spec.Template.Spec }),
	listerOf("statefulset", func(ctx context.Context, c kubernetes.Interface, ns string) ([]appsv1.StatefulSet, error) {
		l, err := c.AppsV1().StatefulSets(ns).List(ctx, all)
		return items(err, func() []appsv1.StatefulSet { return l.Items })
	}, func(s *appsv1.StatefulSet) *corev1.PodSpec { return &s.Spec.Template.Spec }),
	listerOf("daemonset", func(ctx context.Context, c kubernetes.Interface, ns string) ([]appsv1.DaemonSet, error) {
		l, err := c.AppsV1().DaemonSets(ns).List(ctx, all)
		return items(err, func() []appsv1.DaemonSet { return l.Items })
	}, func(d *appsv1.DaemonSet) *corev1.PodSpec { return &d.Spec.Template.Spec }),
	listerOf("job", func(ctx context.Context, c kubernetes.Interface, ns string) ([]batchv1.Job, error) {
		l, err := c.BatchV1().Jobs(ns).List(ctx, all)
		return items(err, func() []batchv1.Job { return l.Items })
	}, func(j *batchv1.Job) *corev1.PodSpec { return &j.Spec.Template.Spec }),
	listerOf("cronjob", func(ctx context.Context, c kubernetes.Interface, ns string) ([]batchv1.CronJob, error) {
		l, err := c.BatchV1().CronJobs(ns).List(ctx, all)
		return items(err, func() []batchv1.CronJob { return l.Items })
	}, func(j *batchv1.CronJob) *corev1.PodSpec { return &j.Spec.JobTemplate.Spec.Template.Spec }),
}

// items returns a list's items unless the call failed.
func items[T any](err error, get func() []T) ([]T, error) {
	if err != nil {
		return nil, err
	}
	return get(), nil
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
	// A reference without a tag (repo@digest) names no tag: which tags
	// have that digest must be read in its repository.
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		if _, ok := u.ByRef[ref]; !ok {
			u.ByRef[ref] = who
		}
	} else if digest != "" {
		if u.Pinned == nil {
			u.Pinned = map[string]bool{}
		}
		u.Pinned[normalRepo(ref)] = true
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
	u = InUse{ByRef: map[string]string{}, ByDigest: map[string]string{}}
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
