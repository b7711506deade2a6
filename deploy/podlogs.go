package deploy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Bounds of the logs a failed deploy shows: the last podLogLines lines,
// at most podLogBytes, of each unready container of at most podLogPods
// pods per workload, all within podLogTime.
const (
	podLogLines = 20
	podLogBytes = 16 << 10
	podLogPods  = 3
	podLogTime  = 10 * time.Second
)

// logFilter is what werf's log annotations of a workload ask for.
type logFilter struct {
	skip           bool
	skipContainers map[string]bool
	onlyContainers map[string]bool
	regex          *regexp.Regexp
	regexFor       map[string]*regexp.Regexp
}

// logFilterOf reads werf.io/skip-logs, skip-logs-for-containers,
// show-logs-only-for-containers, log-regex and log-regex-for-<container>
// (their values were checked by werfTracking).
func logFilterOf(a map[string]string) *logFilter {
	f := &logFilter{skipContainers: map[string]bool{}, onlyContainers: map[string]bool{}, regexFor: map[string]*regexp.Regexp{}}
	f.skip, _ = strconv.ParseBool(a[werfSkipLogs])
	list := func(v string, into map[string]bool) {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" {
				into[c] = true
			}
		}
	}
	list(a[werfSkipLogsFor], f.skipContainers)
	list(a[werfShowLogsOnlyFor], f.onlyContainers)
	if v := a[werfLogRegex]; v != "" {
		f.regex, _ = regexp.Compile(v)
	}
	for k, v := range a {
		if c, ok := strings.CutPrefix(k, werfLogRegexFor); ok && c != "" {
			if re, err := regexp.Compile(v); err == nil {
				f.regexFor[c] = re
			}
		}
	}
	return f
}

// shows says whether a container's logs are shown, and through which
// regular expression (nil: every line).
func (f *logFilter) shows(container string) (bool, *regexp.Regexp) {
	if f == nil {
		return true, nil
	}
	if f.skip || f.skipContainers[container] || len(f.onlyContainers) > 0 && !f.onlyContainers[container] {
		return false, nil
	}
	if re := f.regexFor[container]; re != nil {
		return true, re
	}
	return true, f.regex
}

// showFailingLogs writes the last lines of the unready containers of the
// workloads that kept a deploy from succeeding, as werf's tracker showed
// them, bounded. A log the API cannot give (no node, no container yet) is
// said so in a line.
func showFailingLogs(client kubernetes.Interface, ns string, ws []Workload, trace io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), podLogTime)
	defer cancel()
	for _, w := range ws {
		pods := podsOf(ctx, client, ns, w)
		if len(pods) > podLogPods {
			pods = pods[:podLogPods]
		}
		for _, p := range pods {
			for _, c := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
				if c.Ready || c.State.Terminated != nil && c.State.Terminated.ExitCode == 0 {
					continue
				}
				show, re := w.logs.shows(c.Name)
				if !show {
					continue
				}
				podLog(ctx, client, ns, p.Name, c, re, trace)
			}
		}
	}
}

func podLog(ctx context.Context, client kubernetes.Interface, ns, pod string, c corev1.ContainerStatus, re *regexp.Regexp, trace io.Writer) {
	lines, bytes := int64(podLogLines), int64(podLogBytes)
	// A restarted container's own failure is in its previous run.
	previous := c.RestartCount > 0 && c.State.Running == nil
	head := fmt.Sprintf("Logs of pod %s container %s (last %d lines, at most %d KiB", pod, c.Name, lines, bytes>>10)
	if previous {
		head += ", previous run"
	}
	if re != nil {
		head += ", lines matching " + re.String()
	}
	head += ")"
	stream, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: c.Name, TailLines: &lines, LimitBytes: &bytes, Previous: previous}).Stream(ctx)
	if err != nil {
		fmt.Fprintf(trace, "%s: not available (%v)\n", head, err)
		return
	}
	defer stream.Close()
	var shown []string
	sc := bufio.NewScanner(io.LimitReader(stream, bytes))
	sc.Buffer(make([]byte, 0, 4096), int(bytes))
	for sc.Scan() {
		if re == nil || re.MatchString(sc.Text()) {
			shown = append(shown, "  | "+sc.Text())
		}
	}
	if len(shown) == 0 {
		fmt.Fprintf(trace, "%s: no output\n", head)
		return
	}
	fmt.Fprintf(trace, "%s:\n%s\n", head, strings.Join(shown, "\n"))
}

// podsOf are the pods of a workload, by its selector.
func podsOf(ctx context.Context, client kubernetes.Interface, ns string, w Workload) []corev1.Pod {
	var sel *metav1.LabelSelector
	switch w.Kind {
	case "Deployment":
		if d, err := client.AppsV1().Deployments(ns).Get(ctx, w.Name, metav1.GetOptions{}); err == nil {
			sel = d.Spec.Selector
		}
	case "StatefulSet":
		if s, err := client.AppsV1().StatefulSets(ns).Get(ctx, w.Name, metav1.GetOptions{}); err == nil {
			sel = s.Spec.Selector
		}
	case "DaemonSet":
		if d, err := client.AppsV1().DaemonSets(ns).Get(ctx, w.Name, metav1.GetOptions{}); err == nil {
			sel = d.Spec.Selector
		}
	case "Job":
		if j, err := client.BatchV1().Jobs(ns).Get(ctx, w.Name, metav1.GetOptions{}); err == nil {
			sel = j.Spec.Selector
		}
	}
	pods, _, _ := podsMatching(ctx, client, ns, sel)
	return pods
}
