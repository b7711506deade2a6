package harness

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// PlayKubelet does the kubelet's part for the pods labelled app=<app> in
// ns until ctx ends (the harness has an API server but no nodes): every
// pod it has not seen yet gets its status written by fn. It sends on
// first when it first wrote one.
func PlayKubelet(ctx context.Context, c kubernetes.Interface, ns, app string, fn func(*corev1.Pod), first chan<- time.Time) {
	seen := map[string]bool{}
	for ctx.Err() == nil {
		pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err == nil {
			for i := range pods.Items {
				p := &pods.Items[i]
				if seen[string(p.UID)] || p.DeletionTimestamp != nil {
					continue
				}
				fn(p)
				if _, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
					continue // changed meanwhile: next round
				}
				if len(seen) == 0 && first != nil {
					select {
					case first <- time.Now():
					default:
					}
				}
				seen[string(p.UID)] = true
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PodReady is a running pod whose containers are ready.
func PodReady(p *corev1.Pod) {
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Ready: true, Image: c.Image,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
}
