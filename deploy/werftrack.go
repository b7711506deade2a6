package deploy

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// werf 1.1's tracking annotations (kubedog's, werf 1.1
// pkg/deploy/helm/release.go) and what each does here.
const (
	werfTrackTerminationMode = "werf.io/track-termination-mode"
	werfFailMode             = "werf.io/fail-mode"
	werfFailuresAllowed      = "werf.io/failures-allowed-per-replica"
	werfLogRegex             = "werf.io/log-regex"
	werfLogRegexFor          = "werf.io/log-regex-for-"
	werfSkipLogs             = "werf.io/skip-logs"
	werfSkipLogsFor          = "werf.io/skip-logs-for-containers"
	werfShowLogsOnlyFor      = "werf.io/show-logs-only-for-containers"
	werfShowLogsUntil        = "werf.io/show-logs-until"
	werfShowEvents           = "werf.io/show-service-messages"
	werfReplicasOnCreation   = "werf.io/set-replicas-only-on-creation"
	werfResourcesOnCreation  = "werf.io/set-resources-only-on-creation"
	werfReplicasOnCreation12 = "werf.io/replicas-on-creation"
)

// werfAnnotationNotes say, once per deploy, what a werf annotation does
// here when it is not what werf did.
var werfAnnotationNotes = map[string]string{
	werfFailMode + "=HopeUntilEndOfDeployProcess": "stagehand already waits for every workload until the deploy's timeout (a failed Job ends the wait at once), as werf's HopeUntilEndOfDeployProcess",
	werfFailuresAllowed:                           "accepted; stagehand does not count failures per replica: a workload fails the deploy when it is not ready by the timeout, or its Job failed",
	werfLogRegex:                                  "honoured: a failed deploy shows the last lines of its unready containers through it",
	werfLogRegexFor:                               "honoured: a failed deploy shows the last lines of its unready containers through it",
	werfSkipLogs:                                  "honoured: a failed deploy shows the last lines of its unready containers through it",
	werfSkipLogsFor:                               "honoured: a failed deploy shows the last lines of its unready containers through it",
	werfShowLogsOnlyFor:                           "honoured: a failed deploy shows the last lines of its unready containers through it",
	werfShowEvents:                                "accepted; the trace shows warning events of a workload's pods while it waits, whatever its value",
	werfShowLogsUntil:                             "accepted, no effect (werf 1.1 did not support it either)",
	werfReplicasOnCreation:                        "not applied: the chart's replicas are applied on every deploy; leave replicas out of the chart for an autoscaler",
	werfResourcesOnCreation:                       "not applied: the chart's resources are applied on every deploy",
	werfReplicasOnCreation12:                      "not applied (a werf 1.2 annotation): the chart's replicas are applied on every deploy",
}

// werfTracking reads werf's annotations of one workload: whether it is
// tracked at all and whether it may fail, and notes for the trace keyed
// by annotation (what it does here, or why its value is refused). As in
// werf, a workload with an invalid value is not tracked.
func werfTracking(a map[string]string) (track, optional bool, notes map[string]string) {
	track, notes = true, map[string]string{}
	invalid := func(k, why string) {
		notes[k+"="+a[k]] = fmt.Sprintf("invalid value %q (%s): as in werf, the workload is not tracked", a[k], why)
		track = false
	}
	for k, v := range a {
		if !strings.HasPrefix(k, "werf.io/") {
			continue
		}
		switch {
		case k == werfTrackTerminationMode:
			switch v {
			case "WaitUntilResourceReady":
			case "NonBlocking":
				optional = true
			default:
				invalid(k, "choose WaitUntilResourceReady or NonBlocking")
			}
		case k == werfFailMode:
			switch v {
			case "FailWholeDeployProcessImmediately":
			case "IgnoreAndContinueDeployProcess":
				optional = true
			case "HopeUntilEndOfDeployProcess":
				notes[k+"="+v] = werfAnnotationNotes[k+"="+v]
			default:
				invalid(k, "choose IgnoreAndContinueDeployProcess, FailWholeDeployProcessImmediately or HopeUntilEndOfDeployProcess")
			}
		case k == werfFailuresAllowed:
			if n, err := strconv.Atoi(v); err != nil || n < 0 {
				invalid(k, "a positive or zero integer expected")
			} else {
				notes[k] = werfAnnotationNotes[k]
			}
		case k == werfSkipLogs || k == werfShowEvents:
			if _, err := strconv.ParseBool(v); err != nil {
				invalid(k, "true or false expected")
			} else {
				notes[k] = werfAnnotationNotes[k]
			}
		case k == werfSkipLogsFor || k == werfShowLogsOnlyFor:
			bad := false
			for _, c := range strings.Split(v, ",") {
				bad = bad || strings.TrimSpace(c) == ""
			}
			if bad {
				invalid(k, "a comma-separated list of container names expected")
			} else {
				notes[k] = werfAnnotationNotes[k]
			}
		case k == werfLogRegex || strings.HasPrefix(k, werfLogRegexFor):
			if _, err := regexp.Compile(v); err != nil {
				invalid(k, "a regular expression expected")
			} else if k == werfLogRegex {
				notes[k] = werfAnnotationNotes[k]
			} else {
				notes[werfLogRegexFor+"*"] = werfAnnotationNotes[werfLogRegexFor]
			}
		case werfAnnotationNotes[k] != "":
			notes[k] = werfAnnotationNotes[k]
		default:
			notes[k] = "unknown werf annotation: ignored"
		}
	}
	return track, optional, notes
}

// trackingNotes are the trace lines of werf annotations' notes: one per
// annotation (and value), naming the workloads that carry it.
func trackingNotes(byNote map[string][]string) []string {
	keys := make([]string, 0, len(byNote))
	for k := range byNote {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		key, note, _ := strings.Cut(k, "\x00")
		ws := byNote[k]
		sort.Strings(ws)
		out = append(out, fmt.Sprintf("%s (%s): %s", key, strings.Join(ws, ", "), note))
	}
	return out
}
