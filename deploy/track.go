package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	yaml "sigs.k8s.io/yaml"

	"gitlab.com/stagehand/stagehand/fault"
)

// Tracking annotations a chart may put on a workload.
const (
	// AnnotationTrack "false" leaves the workload out of the wait.
	AnnotationTrack = "stagehand.io/track"
	// AnnotationFailMode "ignore": the deploy does not wait for it and its
	// failures are reported, not fatal.
	AnnotationFailMode = "stagehand.io/fail-mode"
)

// Workload is a tracked object of a release.
type Workload struct {
	Kind, Name string
	// Optional workloads are reported but never fail the deploy.
	Optional bool
	// logs says which of its containers' logs a failure shows.
	logs *logFilter
}

func (w Workload) String() string { return strings.ToLower(w.Kind) + "/" + w.Name }

// Workloads lists the Deployments, StatefulSets, DaemonSets and Jobs of a
// release's manifest, less those annotated not to be tracked (stagehand's
// annotations, and werf 1.1's), with a line for each werf annotation that
// does here other than what werf did.
func Workloads(manifest string) ([]Workload, []string, error) {
	var out []Workload
	byNote := map[string][]string{}
	dec := newDocReader([]byte(manifest))
	for {
		doc, err := dec.next()
		if errors.Is(err, io.EOF) {
			break
		}
		var obj struct {
			Kind     string
			Metadata struct {
				Name        string
				Annotations map[string]string
			}
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, nil, fmt.Errorf("release manifest: %w", err)
		}
		switch obj.Kind {
		case "Deployment", "StatefulSet", "DaemonSet", "Job":
		default:
			continue
		}
		a := obj.Metadata.Annotations
		if a[AnnotationTrack] == "false" {
			continue
		}
		w := Workload{Kind: obj.Kind, Name: obj.Metadata.Name, Optional: a[AnnotationFailMode] == "ignore"}
		track, optional, notes := werfTracking(a)
		for k, n := range notes {
			byNote[k+"\x00"+n] = append(byNote[k+"\x00"+n], w.String())
		}
		if !track {
			continue
		}
		w.Optional = w.Optional || optional
		w.logs = logFilterOf(a)
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, trackingNotes(byNote), nil
}

// state is a workload's readiness as of the last look.
type state struct {
	ready  bool
	failed string // why the workload cannot become ready, "" when it can
	status string // progress in a few words
}

// Track follows the workloads of manifest with watches until all are ready
// (nil), one fails for good, or timeout passes (the job's fault, naming the
// workloads and why). Pods are watched too, for their containers' reasons.
func Track(ctx context.Context, client kubernetes.Interface, ns, manifest string, timeout time.Duration, trace io.Writer) error {
	ws, notes, err := Workloads(manifest)
	if err != nil {
		return fault.Job(err)
	}
	for _, n := range notes {
		fmt.Fprintln(trace, n)
	}
	if len(ws) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fmt.Fprintf(trace, "Waiting for %d workloads (up to %s): %s\n", len(ws), timeout, joinWorkloads(ws))

	events := make(chan struct{}, 1)
	notify := func() {
		select {
		case events <- struct{}{}:
		default:
		}
	}
	watchers := []func(context.Context, metav1.ListOptions) (watch.Interface, error){
		client.AppsV1().Deployments(ns).Watch, client.AppsV1().StatefulSets(ns).Watch,
		client.AppsV1().DaemonSets(ns).Watch, client.BatchV1().Jobs(ns).Watch,
		client.CoreV1().Pods(ns).Watch,
	}
	for _, w := range watchers {
		go keepWatching(ctx, w, notify)
	}

	// A line every trackHeartbeat while nothing changes: people see the
	// job is alive, and gitlab-runner, which hears of a cancel when it
	// sends the trace, hears of it within seconds.
	heartbeat := time.NewTicker(trackHeartbeat)
	defer heartbeat.Stop()
	started := time.Now()
	last := map[string]string{}
	for {
		states := map[Workload]state{}
		for _, w := range ws {
			states[w] = inspect(ctx, client, ns, w)
		}
		done, fatal := true, ""
		for _, w := range ws {
			s := states[w]
			if line := s.status; s.failed != "" {
				line = "failing: " + s.failed
				if last[w.String()] != line {
					fmt.Fprintf(trace, "  %s %s\n", w, line)
				}
				last[w.String()] = line
			} else if last[w.String()] != line {
				fmt.Fprintf(trace, "  %s %s\n", w, line)
				last[w.String()] = line
			}
			if w.Optional {
				continue
			}
			if !s.ready {
				done = false
			}
			if s.failed != "" && isFatal(s.failed) && fatal == "" {
				fatal = fmt.Sprintf("%s: %s", w, s.failed)
			}
		}
		if done {
			return nil
		}
		if fatal != "" {
			showFailingLogs(client, ns, unready(ws, states), trace)
			return fault.Jobf("the rollout failed: %s", fatal)
		}
		select {
		case <-events:
		case <-heartbeat.C:
			var waiting []string
			for _, w := range ws {
				if s := states[w]; !s.ready && !w.Optional {
					waiting = append(waiting, fmt.Sprintf("%s (%s)", w, s.status))
				}
			}
			fmt.Fprintf(trace, "Still waiting (%s of %s): %s\n", time.Since(started).Round(time.Second), timeout, strings.Join(waiting, ", "))
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				var why []string
				for _, w := range ws {
					if s := states[w]; !s.ready && !w.Optional {
						reason := s.status
						if s.failed != "" {
							reason = s.failed
						}
						why = append(why, fmt.Sprintf("%s: %s", w, reason))
					}
				}
				showFailingLogs(client, ns, unready(ws, states), trace)
				return fault.Jobf("not ready after %s (STAGEHAND_DEPLOY_TIMEOUT): %s", timeout, strings.Join(why, "; "))
			}
			return context.Cause(ctx)
		}
	}
}

// unready are the workloads a deploy waits for that are not ready.
func unready(ws []Workload, states map[Workload]state) []Workload {
	var out []Workload
	for _, w := range ws {
		if !w.Optional && !states[w].ready {
			out = append(out, w)
		}
	}
	return out
}

// trackHeartbeat is how often a wait without news says it still waits.
const trackHeartbeat = 10 * time.Second

// isFatal: a Job that failed will not recover; pods backing off may.
func isFatal(reason string) bool { return strings.HasPrefix(reason, "job failed") }

func joinWorkloads(ws []Workload) string {
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = w.String()
	}
	return strings.Join(s, ", ")
}

// keepWatching re-opens a watch until ctx ends, calling notify on events.
func keepWatching(ctx context.Context, open func(context.Context, metav1.ListOptions) (watch.Interface, error), notify func()) {
	for ctx.Err() == nil {
		w, err := open(ctx, metav1.ListOptions{})
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				continue
			}
		}
		for ev := range w.ResultChan() {
			if ev.Type != watch.Bookmark {
				notify()
			}
		}
		w.Stop()
	}
}

func inspect(ctx context.Context, client kubernetes.Interface, ns string, w Workload) state {
	switch w.Kind {
	case "Deployment":
		d, err := client.AppsV1().Deployments(ns).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return state{status: "not found yet"}
		}
		return withPods(ctx, client, ns, d.Spec.Selector, deploymentState(d))
	case "StatefulSet":
		s, err := client.AppsV1().StatefulSets(ns).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return state{status: "not found yet"}
		}
		return withPods(ctx, client, ns, s.Spec.Selector, statefulSetState(s))
	case "DaemonSet":
		d, err := client.AppsV1().DaemonSets(ns).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return state{status: "not found yet"}
		}
		return withPods(ctx, client, ns, d.Spec.Selector, daemonSetState(d))
	case "Job":
		j, err := client.BatchV1().Jobs(ns).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return state{status: "not found yet"}
		}
		return withPods(ctx, client, ns, j.Spec.Selector, jobState(j))
	}
	return state{ready: true}
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// DeploymentReady: the controller saw the newest spec, and every replica
// is updated and available.
func deploymentState(d *appsv1.Deployment) state {
	want := replicas(d.Spec.Replicas)
	st := d.Status
	s := state{status: fmt.Sprintf("%d/%d available, %d updated", st.AvailableReplicas, want, st.UpdatedReplicas)}
	s.ready = st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == want && st.AvailableReplicas == want && st.Replicas == want
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
			s.failed = "progress deadline exceeded: " + c.Message
		}
	}
	if s.ready {
		s.status = fmt.Sprintf("ready (%d/%d)", st.AvailableReplicas, want)
	}
	return s
}

func statefulSetState(ss *appsv1.StatefulSet) state {
	want := replicas(ss.Spec.Replicas)
	st := ss.Status
	s := state{status: fmt.Sprintf("%d/%d ready, %d updated", st.ReadyReplicas, want, st.UpdatedReplicas)}
	s.ready = st.ObservedGeneration >= ss.Generation && st.ReadyReplicas == want && st.UpdatedReplicas == want
	if s.ready {
		s.status = fmt.Sprintf("ready (%d/%d)", st.ReadyReplicas, want)
	}
	return s
}

func daemonSetState(d *appsv1.DaemonSet) state {
	st := d.Status
	s := state{status: fmt.Sprintf("%d/%d ready, %d updated", st.NumberReady, st.DesiredNumberScheduled, st.UpdatedNumberScheduled)}
	s.ready = st.ObservedGeneration >= d.Generation && st.NumberReady == st.DesiredNumberScheduled && st.UpdatedNumberScheduled == st.DesiredNumberScheduled
	if s.ready {
		s.status = fmt.Sprintf("ready (%d/%d)", st.NumberReady, st.DesiredNumberScheduled)
	}
	return s
}

func jobState(j *batchv1.Job) state {
	want := int32(1)
	if j.Spec.Completions != nil {
		want = *j.Spec.Completions
	}
	s := state{status: fmt.Sprintf("%d/%d succeeded, %d active, %d failed", j.Status.Succeeded, want, j.Status.Active, j.Status.Failed)}
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			s.ready, s.status = true, "complete"
		case batchv1.JobFailed:
			s.failed = "job failed: " + c.Reason + " " + c.Message
		}
	}
	if j.Status.Succeeded >= want {
		s.ready = true
	}
	return s
}

// withPods adds why the workload's pods are not running: container
// waiting/terminated reasons, failed probes and warning events.
func withPods(ctx context.Context, client kubernetes.Interface, ns string, sel *metav1.LabelSelector, s state) state {
	if s.ready {
		return s
	}
	pods, selector, ok := podsMatching(ctx, client, ns, sel)
	if !ok {
		return s
	}
	var why []string
	for _, p := range pods {
		why = append(why, podProblems(&p)...)
	}
	if len(why) == 0 {
		why = warningEvents(ctx, client, ns, pods, selector)
	}
	if len(why) > 0 {
		if s.failed == "" {
			s.failed = strings.Join(dedupe(why), "; ")
		}
	}
	return s
}

// podsMatching lists the pods of a workload's selector; ok is false
// without a usable selector or an answer.
func podsMatching(ctx context.Context, client kubernetes.Interface, ns string, sel *metav1.LabelSelector) ([]corev1.Pod, labels.Selector, bool) {
	if sel == nil {
		return nil, nil, false
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || selector.Empty() {
		return nil, nil, false
	}
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, nil, false
	}
	return pods.Items, selector, true
}

// podProblems says what keeps a pod's containers from running or ready.
func podProblems(p *corev1.Pod) []string {
	var out []string
	all := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, c := range all {
		switch {
		case c.State.Waiting != nil && c.State.Waiting.Reason != "" && c.State.Waiting.Reason != "ContainerCreating" && c.State.Waiting.Reason != "PodInitializing":
			msg := fmt.Sprintf("pod %s container %s: %s", p.Name, c.Name, c.State.Waiting.Reason)
			if c.State.Waiting.Message != "" {
				msg += " (" + c.State.Waiting.Message + ")"
			}
			out = append(out, msg)
		case c.State.Terminated != nil && c.State.Terminated.ExitCode != 0:
			out = append(out, fmt.Sprintf("pod %s container %s: terminated, %s, exit code %d", p.Name, c.Name, c.State.Terminated.Reason, c.State.Terminated.ExitCode))
		case c.State.Running != nil && !c.Ready && c.LastTerminationState.Terminated != nil:
			out = append(out, fmt.Sprintf("pod %s container %s: not ready, restarted %d times (last: %s)", p.Name, c.Name, c.RestartCount, c.LastTerminationState.Terminated.Reason))
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			out = append(out, fmt.Sprintf("pod %s: unschedulable (%s)", p.Name, c.Message))
		}
	}
	return out
}

// warningEvents are the latest warnings about the pods (failed probes,
// image pulls, scheduling).
func warningEvents(ctx context.Context, client kubernetes.Interface, ns string, pods []corev1.Pod, _ labels.Selector) []string {
	names := map[string]bool{}
	for _, p := range pods {
		names[p.Name] = true
	}
	evs, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"})
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind == "Pod" && names[e.InvolvedObject.Name] {
			out = append(out, fmt.Sprintf("pod %s: %s: %s", e.InvolvedObject.Name, e.Reason, e.Message))
		}
	}
	return out
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
