#!/usr/bin/env bash
# The real components stagehand's tests and demo run against, on this host:
# Docker Engine(s) with their own data roots and sockets, a registry on
# loopback with a locally made base image, the real gitlab-runner, and a
# Kubernetes API server (etcd, kube-apiserver, kube-controller-manager),
# both built from Go modules. Idempotent: what already
# runs is left alone.
#
#   scripts/harness.sh up      install what is missing, start what is down
#   scripts/harness.sh down    stop what `up` started
#   scripts/harness.sh env     print the env file tests read
#   scripts/harness.sh kube-up, kube-down   only Kubernetes (needs no root)
#
# Settings (environment): STAGEHAND_HARNESS_HOME (/var/lib/stagehand-harness),
# STAGEHAND_CACHE ($HOME/.cache/stagehand: built binaries, reused),
# STAGEHAND_ENGINES ("h1 h2 h3 h4": one Docker Engine per name; the stages and fault tests build on several hosts), STAGEHAND_REGISTRY_PORT (5000),
# STAGEHAND_KUBE_VERSION (1.37.2), and the Kubernetes recipe's API_PORT (6443),
# ETCD_PORT (2379), ETCD_PEER_PORT (2380), KCM_PORT (10257).
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$SCRIPTS")
HOME_DIR=${STAGEHAND_HARNESS_HOME:-/var/lib/stagehand-harness}
RUN=$HOME_DIR/run
CACHE=${STAGEHAND_CACHE:-$HOME/.cache/stagehand}
ENGINES=${STAGEHAND_ENGINES:-h1 h2 h3 h4}
REGISTRY_PORT=${STAGEHAND_REGISTRY_PORT:-5000}
REGISTRY=127.0.0.1:$REGISTRY_PORT
BASE_IMAGE=$REGISTRY/stagehand/busybox:latest
ENV_FILE=$HOME_DIR/harness.env
# Where the recipes live: $STAGEHAND_SHARED, else ../shared next to the
# checkout, else this workplace's /work/shared (for clones made elsewhere).
SHARED=${STAGEHAND_SHARED:-}
if [ -z "$SHARED" ]; then
	for candidate in "$(cd "$REPO/.." && pwd)/shared" /work/shared; do
		if [ -d "$candidate/recipes" ]; then SHARED=$candidate; break; fi
	done
	SHARED=${SHARED:-$(cd "$REPO/.." && pwd)/shared}
fi

log() { printf '\033[36;1mharness:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31;1mharness: %s\033[0m\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts dockerd)"; }

install_packages() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	command -v docker-registry >/dev/null || missing+=(docker-registry)
	[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh && file_static /bin/busybox || missing+=(busybox-static)
	command -v git >/dev/null || missing+=(git)
	command -v curl >/dev/null || missing+=(curl)
	command -v ss >/dev/null || missing+=(iproute2)
	command -v openssl >/dev/null || missing+=(openssl)
	command -v bc >/dev/null || missing+=(bc) # the Kubernetes recipe times its start with it
	{ command -v gcc >/dev/null && [ -e /usr/include/stdlib.h ]; } || missing+=(gcc libc6-dev) # go test -race needs cgo
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# busybox-static is what makes a base image without internet; the dynamic
# busybox package would not run inside an empty rootfs.
file_static() { ! ldd "$1" >/dev/null 2>&1; }

engine_sock() { echo "$RUN/$1/docker.sock"; }

start_engine() {
	local name=$1 dir=$RUN/$1 sock
	sock=$(engine_sock "$name")
	if DOCKER_HOST=unix://$sock docker version >/dev/null 2>&1; then
		log "docker engine $name: running ($sock)"
		return
	fi
	mkdir -p "$dir" "$HOME_DIR/$name/docker"
	if [ -f "$dir/dockerd.pid" ]; then kill "$(cat "$dir/dockerd.pid")" 2>/dev/null || true; sleep 1; fi
	rm -f "$sock" "$dir/dockerd.pid"
	log "docker engine $name: starting"
	# No bridge and no iptables: engines share the host network namespace and
	# must not fight over docker0; job containers use host or none networking.
	setsid dockerd \
		--data-root "$HOME_DIR/$name/docker" \
		--exec-root "$dir/exec" \
		--pidfile "$dir/dockerd.pid" \
		--host "unix://$sock" \
		--bridge none --iptables=false --ip6tables=false \
		--containerd-namespace "stagehand-$name" \
		--containerd-plugins-namespace "stagehand-$name-plugins" \
		>"$dir/dockerd.log" 2>&1 </dev/null &
	for _ in $(seq 1 150); do
		DOCKER_HOST=unix://$sock docker version >/dev/null 2>&1 && { log "docker engine $name: up"; return; }
		sleep 0.2
	done
	tail -20 "$dir/dockerd.log" >&2
	die "docker engine $name did not start (log: $dir/dockerd.log)"
}

start_registry() {
	if curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then
		log "registry: running ($REGISTRY)"
		return
	fi
	mkdir -p "$RUN/registry" "$HOME_DIR/registry"
	cat >"$RUN/registry/config.yml" <<EOC
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $HOME_DIR/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $REGISTRY
EOC
	log "registry: starting on $REGISTRY"
	setsid docker-registry serve "$RUN/registry/config.yml" >"$RUN/registry/registry.log" 2>&1 </dev/null &
	echo $! >"$RUN/registry/registry.pid"
	for _ in $(seq 1 100); do
		curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && { log "registry: up"; return; }
		sleep 0.1
	done
	tail -20 "$RUN/registry/registry.log" >&2
	die "registry did not start (log: $RUN/registry/registry.log)"
}

# make_base_image builds a tiny image from busybox-static (no internet here)
# with a marker file only this image has, and pushes it to the registry.
make_base_image() {
	local sock
	sock=$(engine_sock "${ENGINES%% *}")
	if curl -fsS -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"http://$REGISTRY/v2/stagehand/busybox/manifests/latest" 2>/dev/null; then
		log "base image: $BASE_IMAGE present"
	else
		log "base image: building $BASE_IMAGE from busybox-static"
		local root
		root=$(mktemp -d)
		mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
		chmod 1777 "$root/tmp"
		cp /bin/busybox "$root/bin/busybox"
		for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
		echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
		echo 'root:x:0:' >"$root/etc/group"
		echo 'stagehand base image (busybox-static)' >"$root/etc/stagehand-base-image"
		tar -C "$root" -c . | DOCKER_HOST=unix://$sock docker import -c 'ENV PATH=/bin' -c 'CMD ["sh"]' - "$BASE_IMAGE" >/dev/null
		rm -rf "$root"
		DOCKER_HOST=unix://$sock docker push -q "$BASE_IMAGE" >/dev/null
	fi
	# Every engine gets it locally too, as a pre-pulled base.
	for name in $ENGINES; do
		DOCKER_HOST=unix://$(engine_sock "$name") docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 ||
			DOCKER_HOST=unix://$(engine_sock "$name") docker pull -q "$BASE_IMAGE" >/dev/null
	done
}

build_gitlab_runner() {
	local recipe=$SHARED/recipes/gitlab-runner/build.sh
	[ -x "$recipe" ] || die "gitlab-runner recipe not found at $recipe (set STAGEHAND_SHARED to the shared/ directory)"
	mkdir -p "$CACHE/bin"
	RUNNERBUILD_CACHE=$CACHE/runnerbuild "$recipe" "$CACHE/bin" >"$CACHE/gitlab-runner-build.log" 2>&1 ||
		{ tail -30 "$CACHE/gitlab-runner-build.log" >&2; die "building gitlab-runner failed (log: $CACHE/gitlab-runner-build.log)"; }
	log "gitlab-runner: $("$CACHE/bin/gitlab-runner" --version 2>/dev/null | head -1)"
}

# Kubernetes: etcd, kube-apiserver and kube-controller-manager built from
# Go modules by the shared recipe (once per version, into the cache) and
# started on loopback (etcd 2379, API server 6443).
KUBE_VERSION=${STAGEHAND_KUBE_VERSION:-1.37.2}
KUBE_HOME=$CACHE/kube-$KUBE_VERSION
KUBE_RECIPE=$SHARED/recipes/kubernetes
KUBECONFIG_PATH=$KUBE_HOME/run/kubeconfig
KUBE_API_PORT=${API_PORT:-6443}

build_kube() {
	[ -x "$KUBE_RECIPE/build-kube.sh" ] || die "Kubernetes recipe not found at $KUBE_RECIPE (set STAGEHAND_SHARED to the shared/ directory)"
	mkdir -p "$KUBE_HOME/bin" "$CACHE/logs"
	if [ ! -x "$KUBE_HOME/bin/etcd" ]; then
		log "etcd: building from Go modules (about a minute, once)"
		KUBE_RECIPE_HOME=$KUBE_HOME "$KUBE_RECIPE/build-etcd.sh" >"$CACHE/logs/etcd-build.log" 2>&1 ||
			{ tail -30 "$CACHE/logs/etcd-build.log" >&2; die "building etcd failed (log: $CACHE/logs/etcd-build.log)"; }
	fi
	if [ ! -x "$KUBE_HOME/bin/kube-apiserver" ] || [ ! -x "$KUBE_HOME/bin/kube-controller-manager" ]; then
		log "kube-apiserver, kube-controller-manager $KUBE_VERSION: building from Go modules (several minutes, once)"
		KV=$KUBE_VERSION KUBE_RECIPE_HOME=$KUBE_HOME "$KUBE_RECIPE/build-kube.sh" >"$CACHE/logs/kube-build.log" 2>&1 ||
			{ tail -30 "$CACHE/logs/kube-build.log" >&2; die "building Kubernetes failed (log: $CACHE/logs/kube-build.log)"; }
	fi
}

kube_ready() {
	[ -f "$KUBECONFIG_PATH" ] &&
		[ "$(curl -sk -m 5 -H 'Authorization: Bearer probe-admin-token' https://127.0.0.1:$KUBE_API_PORT/readyz 2>/dev/null)" = ok ]
}

kcm_running() {
	[ -f "$KUBE_HOME/run/kube-controller-manager.pid" ] && kill -0 "$(cat "$KUBE_HOME/run/kube-controller-manager.pid")" 2>/dev/null
}

# The recipe starts its servers in the background of its own shell; setsid
# gives them a session of their own, as the Docker engines have, so that
# whatever stops the caller's process group (a CI job's end, Ctrl-C) leaves
# them running.
kube_recipe() {
	KUBE_RECIPE_HOME=$KUBE_HOME setsid -w "$KUBE_RECIPE/$1" </dev/null
}

start_kube() {
	# A busy machine may answer slowly: ask twice before restarting.
	if kube_ready || { sleep 2; kube_ready; }; then
		if kcm_running; then
			log "kube-apiserver: up ($KUBECONFIG_PATH)"
			return
		fi
		# The API server and its data stay; only the controllers come back.
		log "kube-controller-manager: starting"
		kube_recipe start-kcm.sh >"$CACHE/logs/kube-start.log" 2>&1 ||
			{ tail -30 "$CACHE/logs/kube-start.log" >&2; die "starting kube-controller-manager failed (log: $CACHE/logs/kube-start.log)"; }
		log "kube-apiserver: up ($KUBECONFIG_PATH)"
		return
	fi
	# A half-started or stale set (ports held, pid files left) goes first.
	kube_recipe stop.sh >/dev/null 2>&1 || true
	log "kube-apiserver: starting etcd, kube-apiserver, kube-controller-manager"
	KCM=1 kube_recipe start.sh >"$CACHE/logs/kube-start.log" 2>&1 ||
		{ tail -30 "$CACHE/logs/kube-start.log" >&2; die "starting Kubernetes failed (log: $CACHE/logs/kube-start.log)"; }
	kube_ready || die "kube-apiserver is not ready (log: $KUBE_HOME/run/kube-apiserver.log)"
	log "kube-apiserver: up ($KUBECONFIG_PATH; $(grep -o 'total [0-9.]*s' "$CACHE/logs/kube-start.log" || true))"
}

write_env() {
	local engines_env="" first=""
	for name in $ENGINES; do
		[ -n "$first" ] || first=$name
		engines_env="$engines_env $name=unix://$(engine_sock "$name")"
	done
	cat >"$ENV_FILE" <<EOE
STAGEHAND_TEST_DOCKER_HOST=unix://$(engine_sock "$first")
STAGEHAND_TEST_DOCKER_ENGINES=${engines_env# }
STAGEHAND_TEST_REGISTRY=$REGISTRY
STAGEHAND_TEST_REGISTRY_LOG=$RUN/registry/registry.log
STAGEHAND_TEST_BASE_IMAGE=$BASE_IMAGE
STAGEHAND_TEST_GITLAB_RUNNER=$CACHE/bin/gitlab-runner
STAGEHAND_TEST_KUBECONFIG=$KUBECONFIG_PATH
STAGEHAND_TEST_KUBE_BIN=$KUBE_HOME/bin
EOE
	log "env: $ENV_FILE"
}

up() {
	need_root
	install_packages
	mkdir -p "$HOME_DIR" "$RUN"
	for name in $ENGINES; do start_engine "$name"; done
	start_registry
	make_base_image
	build_gitlab_runner
	build_kube
	start_kube
	write_env
}

kube_down() {
	[ ! -x "$KUBE_RECIPE/stop.sh" ] || kube_recipe stop.sh >/dev/null 2>&1 || true
}

down() {
	kube_down
	for pidfile in "$RUN"/*/dockerd.pid "$RUN"/registry/registry.pid; do
		[ -f "$pidfile" ] || continue
		local pid
		pid=$(cat "$pidfile")
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$pidfile"
	done
	log "stopped"
}

case "${1:-up}" in
up) up ;;
down) down ;;
env) cat "$ENV_FILE" ;;
kube-up) build_kube && start_kube ;;
kube-down) kube_down && log "kubernetes: stopped" ;;
*) die "usage: $0 up|down|env|kube-up|kube-down" ;;
esac
