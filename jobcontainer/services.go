package jobcontainer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gitlab.com/stagehand/stagehand/docker"
	"gitlab.com/stagehand/stagehand/fault"
	"gitlab.com/stagehand/stagehand/internal/netaddr"
	"gitlab.com/stagehand/stagehand/request"
)

// Bounds of what a failed service shows of its output.
const (
	serviceLogLines = 20
	serviceLogBytes = 16 << 10
)

// StartServices starts a job's services, as the docker executor does but
// without a bridge network (engines started without one have none): the
// first service's container owns a network namespace, with every alias in
// its /etc/hosts as 127.0.0.1; the other services and the job's
// containers join it, so a service listening on a port is reachable as
// ALIAS:PORT. Each service is waited for until it listens on every port
// its image exposes (bounded by r.Timeout); one that exits, or does not
// listen in time, fails the job as its fault with its last output lines.
// The containers carry the job's label: cleanup removes them.
func StartServices(ctx context.Context, r request.JobServices, w io.Writer) (request.ServicesStarted, error) {
	if len(r.Services) == 0 {
		return request.ServicesStarted{}, nil
	}
	e, err := docker.Connect(ctx, r.Engine.Host)
	if err != nil {
		return request.ServicesStarted{}, err
	}
	defer e.Close()
	var hosts []string
	for _, s := range r.Services {
		for _, a := range s.Aliases {
			hosts = append(hosts, a+":127.0.0.1")
		}
	}
	owner := request.ServiceContainer(r.JobKey, 0)
	started := make([]*docker.Container, len(r.Services))
	for i, s := range r.Services {
		if err := EnsureImage(ctx, request.JobImage{Engine: r.Engine, Image: s.Image, PullPolicies: s.PullPolicies}, w); err != nil {
			return request.ServicesStarted{}, err
		}
		spec := docker.ContainerSpec{
			Name: request.ServiceContainer(r.JobKey, i), Image: s.Image, Cmd: s.Command, Env: s.Env,
			Labels: map[string]string{LabelJob: r.JobKey, labelStage: "service"},
		}
		if s.OverrideEntrypoint {
			spec.Entrypoint = entrypointOf(s.Entrypoint)
		}
		if i == 0 {
			spec.Network, spec.ExtraHosts = r.Engine.Network, hosts
		} else {
			spec.Network = "container:" + owner
		}
		c, err := e.Create(ctx, spec)
		if err != nil {
			return request.ServicesStarted{}, fault.Jobf("service %s: %w", s.Image, err)
		}
		if err := c.Start(ctx); err != nil {
			return request.ServicesStarted{}, fault.Jobf("service %s: %w", s.Image, err)
		}
		started[i] = c
		fmt.Fprintf(w, "Started service %s as %s\n", s.Image, strings.Join(s.Aliases, ", "))
	}
	for i, s := range r.Services {
		info, _, err := e.Inspect(ctx, s.Image)
		if err != nil {
			return request.ServicesStarted{}, err
		}
		if err := waitForPorts(ctx, started[i], s, tcpPorts(info.ExposedPorts), localEngine(r.Engine.Host), r.Timeout, w); err != nil {
			return request.ServicesStarted{}, err
		}
	}
	return request.ServicesStarted{Network: "container:" + owner}, nil
}

// entrypointOf is an `entrypoint:` as the engine takes it: [""] clears.
func entrypointOf(ep []string) []string {
	if len(ep) == 0 || len(ep) == 1 && ep[0] == "" {
		return []string{}
	}
	return ep
}

// tcpPorts are the TCP ports of "PORT/PROTO" entries.
func tcpPorts(exposed []string) []int {
	var out []int
	for _, p := range exposed {
		num, proto, _ := strings.Cut(p, "/")
		if proto != "" && proto != "tcp" {
			continue
		}
		if n, err := strconv.Atoi(num); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// waitForPorts waits until the service listens on every port (read from
// its process's /proc/PID/net/tcp and tcp6 on the engine's host), or it
// exits, or timeout passes.
func waitForPorts(ctx context.Context, c *docker.Container, s request.Service, ports []int, local bool, timeout time.Duration, w io.Writer) error {
	if len(ports) == 0 {
		return nil
	}
	if !local {
		fmt.Fprintf(w, "Service %s: its engine is on another host, whose processes stagehand cannot read: not waiting for its ports\n", s.Image)
		return nil
	}
	fmt.Fprintf(w, "Waiting for service %s to listen on port %s (up to %s)\n", s.Image, joinInts(ports), timeout)
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		st, err := c.State(ctx)
		if err != nil {
			return err
		}
		if !st.Running {
			return serviceFailed(ctx, c, s, fmt.Sprintf("exited with code %d", st.ExitCode))
		}
		listening, err := listeningPorts(st.Pid)
		if err != nil && !os.IsNotExist(err) {
			fmt.Fprintf(w, "Service %s: cannot see its ports (%v): not waiting\n", s.Image, err)
			return nil
		}
		// (Not there: the process is ending; the engine says so next.)
		missing := 0
		for _, p := range ports {
			if !listening[p] {
				missing++
			}
		}
		if missing == 0 {
			fmt.Fprintf(w, "Service %s is listening (%s)\n", s.Image, time.Since(start).Round(time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) {
			return serviceFailed(ctx, c, s, fmt.Sprintf("does not listen on port %s after %s", joinInts(ports), timeout))
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// serviceFailed is the job's error for a service that failed, with its
// last output lines.
func serviceFailed(ctx context.Context, c *docker.Container, s request.Service, why string) error {
	logs, err := c.Logs(context.WithoutCancel(ctx), serviceLogLines, serviceLogBytes)
	if err != nil {
		logs = "(its output could not be read: " + err.Error() + ")"
	}
	logs = strings.TrimRight(logs, "\n")
	if logs == "" {
		logs = "(no output)"
	}
	return fault.Jobf("service %s (%s) %s; its last output:\n%s", s.Image, strings.Join(s.Aliases, ", "), why, indent(logs))
}

func indent(s string) string { return "  | " + strings.ReplaceAll(s, "\n", "\n  | ") }

// listeningPorts are the TCP ports in LISTEN state in the network
// namespace of process pid.
func listeningPorts(pid int) (map[int]bool, error) {
	out := map[int]bool{}
	for _, f := range []string{"tcp", "tcp6"} {
		file, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			if f == "tcp6" && os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			// "sl local_address rem_address st ...": 0A is LISTEN.
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" {
				continue
			}
			_, port, ok := strings.Cut(fields[1], ":")
			if n, err := strconv.ParseInt(port, 16, 32); ok && err == nil {
				out[int(n)] = true
			}
		}
		file.Close()
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// localEngine tells an engine on this host (its processes are in this
// host's /proc): a unix socket, or TCP on a loopback address.
func localEngine(host string) bool {
	if host == "" || strings.HasPrefix(host, "unix://") {
		return true
	}
	rest, ok := strings.CutPrefix(host, "tcp://")
	return ok && netaddr.Loopback(rest)
}
