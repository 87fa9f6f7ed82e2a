#!/usr/bin/env bash
# The container harness of `make test-containers`: a Docker engine of its own,
# local base images, then the compose stack test (deploy/containertest).
#
#   deploy/containers.sh test     # engine up → plugins → local images → go test → engine down
#   deploy/containers.sh images   # engine up → local images (names on stdout) → engine down
#   deploy/containers.sh shell    # engine up; a shell with DOCKER_HOST and the image variables set
#   deploy/containers.sh --help
#
# What it does, each step skipped when already done:
# - installs Debian's docker.io and debootstrap when missing (root, apt-get);
# - builds the Docker Compose and Buildx CLI plugins from the Go module proxy
#   into $FLYWHEEL_CONTAINERS_STATE/tools (the programs users run; versions below);
# - starts dockerd with its own data root, exec root and socket under
#   $FLYWHEEL_CONTAINERS_STATE (default /var/lib/flywheel-containers), no
#   bridge and no iptables rules: every container uses the host's network and
#   binds 127.0.0.1; stops it on exit, whatever happened (trap), and fails if
#   anything of it is left running;
# - makes the local images (deploy/images/*.Dockerfile: the build's bases,
#   Prometheus, Alertmanager, MLflow, PostgreSQL, HAProxy) from a cached
#   `debootstrap --variant=minbase bookworm` tarball, each tagged by a hash
#   of its inputs, so a second run builds nothing.
# Engine log: var/containers/dockerd.log. Details: docs/deploy.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${FLYWHEEL_CONTAINERS_STATE:-/var/lib/flywheel-containers}
WORK=$ROOT/var/containers
# Plugins live beside the engine state, so every checkout (and CI clone) shares them.
TOOLS=$STATE/tools
COMPOSE_VERSION=v5.6.0
BUILDX_VERSION=v0.38.2
SUITE=bookworm
# Debian's client, the same release as the engine it talks to.
DOCKER=${FLYWHEEL_DOCKER:-/usr/bin/docker}
GO=${GO:-go}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

say() { printf '[containers %5ss] %s\n' "$SECONDS" "$*" >&2; }

# --- packages -------------------------------------------------------------
ensure_packages() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	[ -x /usr/bin/docker ] || missing+=(docker.io)
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	command -v flock >/dev/null || missing+=(util-linux)
	[ ${#missing[@]} = 0 ] && return
	say "installing ${missing[*]} from Debian"
	local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
	# Debian's package enables the system service; this harness runs its own engine.
	$sudo systemctl disable --now docker.socket docker.service >/dev/null 2>&1 || true
}

# --- CLI plugins ----------------------------------------------------------
# Compose's go.mod has exclude directives, so `go install module@version`
# refuses it: build its command inside the downloaded module instead, which
# is what `go install` would build.
build_compose() {
	local out=$TOOLS/docker-compose-$COMPOSE_VERSION
	[ -x "$out" ] && return
	say "building docker compose $COMPOSE_VERSION (Go module proxy; a few minutes, once)"
	local dir
	dir=$($GO mod download -json "github.com/docker/compose/v5@$COMPOSE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir" ] || { echo "containers.sh: compose $COMPOSE_VERSION not downloaded" >&2; return 1; }
	mkdir -p "$TOOLS"
	(cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod $GO build -trimpath \
		-ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" -o "$out.part" ./cmd)
	mv "$out.part" "$out"
}

build_buildx() {
	local out=$TOOLS/docker-buildx-$BUILDX_VERSION
	[ -x "$out" ] && return
	say "building docker buildx $BUILDX_VERSION (Go module proxy; a few minutes, once)"
	local tmp; tmp=$(mktemp -d)
	CGO_ENABLED=0 GOBIN=$tmp $GO install -trimpath \
		-ldflags "-s -w -X github.com/docker/buildx/version.Version=$BUILDX_VERSION" \
		"github.com/docker/buildx/cmd/buildx@$BUILDX_VERSION"
	mkdir -p "$TOOLS"; mv "$tmp/buildx" "$out"; rm -rf "$tmp"
}

ensure_plugins() {
	build_compose
	build_buildx
	export DOCKER_CONFIG=$WORK/docker-config
	mkdir -p "$DOCKER_CONFIG/cli-plugins"
	ln -sf "$TOOLS/docker-compose-$COMPOSE_VERSION" "$DOCKER_CONFIG/cli-plugins/docker-compose"
	ln -sf "$TOOLS/docker-buildx-$BUILDX_VERSION" "$DOCKER_CONFIG/cli-plugins/docker-buildx"
}

# --- engine ---------------------------------------------------------------
ENGINE_PID=
engine_up() {
	mkdir -p "$STATE" "$WORK"
	# One engine per state directory: a second run waits for the first.
	exec 9>"$STATE/lock"
	if ! flock -n 9; then
		say "waiting for another run using $STATE"
		flock -w 3600 9
	fi
	local sock=$STATE/docker.sock
	rm -f "$sock" "$STATE/dockerd.pid"
	say "starting dockerd (data root $STATE/docker, no bridge, no iptables)"
	setsid dockerd \
		--data-root "$STATE/docker" --exec-root "$STATE/run" --pidfile "$STATE/dockerd.pid" \
		-H "unix://$sock" --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
		--userland-proxy=false --log-level=warn >"$WORK/dockerd.log" 2>&1 &
	ENGINE_PID=$!
	export DOCKER_HOST=unix://$sock
	local i
	for i in $(seq 1 120); do
		if "$DOCKER" version >/dev/null 2>&1; then
			say "dockerd $("$DOCKER" version -f '{{.Server.Version}}') ready (pid $ENGINE_PID)"
			return
		fi
		kill -0 "$ENGINE_PID" 2>/dev/null || break
		sleep 0.5
	done
	tail -20 "$WORK/dockerd.log" >&2
	echo "containers.sh: dockerd did not start (log: $WORK/dockerd.log)" >&2
	return 1
}

# unmount_under DIR unmounts every mount below DIR, innermost first.
unmount_under() {
	local m
	for m in $(awk -v s="$1/" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
}

# engine_down stops what this run started and fails if any of it is left.
engine_down() {
	[ -n "$ENGINE_PID" ] || return 0
	local left
	left=$("$DOCKER" ps -q 2>/dev/null | wc -l) || left=?
	[ "$left" = 0 ] || say "engine down: $left containers still running (dockerd stops them)"
	kill -TERM "$ENGINE_PID" 2>/dev/null || true
	local i
	for i in $(seq 1 60); do
		kill -0 "$ENGINE_PID" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$ENGINE_PID" 2>/dev/null; then
		say "dockerd did not stop in 30s: killing its process group"
		kill -KILL -- "-$ENGINE_PID" 2>/dev/null || true
	fi
	wait "$ENGINE_PID" 2>/dev/null || true
	ENGINE_PID=
	# Mounts dockerd leaves behind (its network namespace file, the data
	# root's private bind) go too.
	unmount_under "$STATE"
	# Nothing of the engine may outlive it: containerd, shims, containers, mounts.
	local rest
	rest=$(pgrep -f -- "$STATE/run" || true)
	if [ -n "$rest" ]; then
		echo "containers.sh: left running after dockerd stopped: $(echo $rest)" >&2
		ENGINE_LEFT=1
	fi
	if grep -q " $STATE/" /proc/mounts; then
		echo "containers.sh: left mounted after dockerd stopped: $(grep " $STATE/" /proc/mounts | cut -d' ' -f2 | tr '\n' ' ')" >&2
		ENGINE_LEFT=1
	fi
	[ -n "${ENGINE_LEFT:-}" ] || say "dockerd stopped; nothing left running or mounted"
}

# --- local images ---------------------------------------------------------
# The Debian mirror this machine's apt uses for $SUITE.
mirror() {
	apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
		awk -v s="$SUITE" '$2 == s && $1 !~ /security/ { print $1; exit }'
}

# rootfs_tarball prints the path of the cached minbase tarball, making it once.
rootfs_tarball() {
	local tar=$STATE/cache/debootstrap-$SUITE-minbase-$(dpkg --print-architecture).tar
	if [ ! -s "$tar" ]; then
		local m; m=$(mirror)
		[ -n "$m" ] || { echo "containers.sh: no Debian $SUITE mirror in apt's sources" >&2; return 1; }
		say "debootstrap --variant=minbase $SUITE (once; cached in $tar)"
		local dir; dir=$(mktemp -d "$STATE/rootfs.XXXXXX")
		debootstrap --variant=minbase "$SUITE" "$dir" "$m" >"$WORK/debootstrap.log" 2>&1 ||
			{ tail -20 "$WORK/debootstrap.log" >&2; rm -rf "$dir"; return 1; }
		# debootstrap mounts /proc and /sys in the target while it works;
		# nothing mounted may end up in the tarball or under rm -rf.
		unmount_under "$dir"
		rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/*
		mkdir -p "$STATE/cache"
		tar --numeric-owner --one-file-system -C "$dir" -cf "$tar.part" .
		rm -rf --one-file-system "$dir"
		mv "$tar.part" "$tar"
	fi
	echo "$tar"
}

# key hashes the contents of its files ("-": standard input) into a short
# tag; paths do not count, so every checkout shares the cache.
key() {
	local f
	for f in "$@"; do
		if [ "$f" = - ]; then cat; else cat "$f"; fi
	done | sha256sum | cut -c1-16
}

# local_image NAME TAG CONTEXT [BUILD-ARG...] builds deploy/images/NAME.Dockerfile
# as flywheel-local/NAME:TAG unless that image exists.
local_image() {
	local name=$1 tag=$2 ctx=$3; shift 3
	local ref=flywheel-local/$name:$tag
	if "$DOCKER" image inspect "$ref" >/dev/null 2>&1; then
		echo "$ref"; return
	fi
	say "building $ref"
	local args=() a
	for a in "$@"; do args+=(--build-arg "$a"); done
	DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain "${args[@]}" \
		--label org.flywheel-ml.local-image.key="$tag" \
		-t "$ref" -f "$ROOT/deploy/images/$name.Dockerfile" "$ctx" >"$WORK/image-$name.log" 2>&1 ||
		{ tail -30 "$WORK/image-$name.log" >&2; return 1; }
	echo "$ref"
}

images() {
	local tar; tar=$(rootfs_tarball)
	local tarsum; tarsum=$(sha256sum <"$tar" | cut -c1-16)
	local rootfs=flywheel-local/rootfs:$SUITE-$tarsum
	if ! "$DOCKER" image inspect "$rootfs" >/dev/null 2>&1; then
		say "docker import $tar"
		"$DOCKER" import "$tar" "$rootfs" >/dev/null
	fi
	# Contexts: the host's extra certificate authorities (this machine may
	# reach registries through a TLS-inspecting egress), the Go toolchain,
	# MLflow's installer; an empty one for the rest.
	local ca=$WORK/ctx/ca empty=$WORK/ctx/empty
	rm -rf "$ca"; mkdir -p "$ca" "$empty"
	find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} "$ca/" \; 2>/dev/null || true
	local df=$ROOT/deploy/images cas
	cas=$(cd "$ca" && find . -type f | sort | xargs -r sha256sum | sha256sum | cut -c1-16)
	local debian goroot mlflowsrc
	debian=$(local_image debian "$(echo "$rootfs $cas" | key "$df/debian.Dockerfile" -)" "$ca" "ROOTFS_IMAGE=$rootfs")
	goroot=$($GO env GOROOT)
	mlflowsrc=$(cd "$ROOT/../shared/mlflow" && pwd)
	# The rest depend only on debian: build them side by side (mostly
	# package downloads), each name into its own file.
	local pids=() name
	local_image golang "$(echo "$debian $($GO version)" | key "$df/golang.Dockerfile" "$goroot/VERSION" -)" "$goroot" "BASE_IMAGE=$debian" >"$WORK/ref-golang" & pids+=($!)
	local_image node "$(echo "$debian" | key "$df/node.Dockerfile" -)" "$empty" "BASE_IMAGE=$debian" >"$WORK/ref-node" & pids+=($!)
	local_image prometheus "$(echo "$debian" | key "$df/prometheus.Dockerfile" -)" "$empty" "BASE_IMAGE=$debian" >"$WORK/ref-prometheus" & pids+=($!)
	local_image alertmanager "$(echo "$debian" | key "$df/alertmanager.Dockerfile" -)" "$empty" "BASE_IMAGE=$debian" >"$WORK/ref-alertmanager" & pids+=($!)
	local_image mlflow "$(echo "$debian" | key "$df/mlflow.Dockerfile" "$mlflowsrc"/install.sh "$mlflowsrc"/*.tar.gz -)" "$mlflowsrc" "BASE_IMAGE=$debian" >"$WORK/ref-mlflow" & pids+=($!)
	local_image postgres "$(echo "$debian" | key "$df/postgres.Dockerfile" "$df/postgres-entrypoint.sh" -)" "$df" "BASE_IMAGE=$debian" >"$WORK/ref-postgres" & pids+=($!)
	local_image haproxy "$(echo "$debian" | key "$df/haproxy.Dockerfile" -)" "$empty" "BASE_IMAGE=$debian" >"$WORK/ref-haproxy" & pids+=($!)
	local failed=0 pid
	for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
	[ "$failed" = 0 ] || { echo "containers.sh: a local image failed to build (logs: $WORK/image-*.log)" >&2; return 1; }
	local golang node prometheus alertmanager mlflow postgres haproxy
	golang=$(cat "$WORK/ref-golang") node=$(cat "$WORK/ref-node") prometheus=$(cat "$WORK/ref-prometheus")
	alertmanager=$(cat "$WORK/ref-alertmanager") mlflow=$(cat "$WORK/ref-mlflow")
	postgres=$(cat "$WORK/ref-postgres") haproxy=$(cat "$WORK/ref-haproxy")
	cat >"$WORK/images.env" <<-EOF
		FLYWHEEL_LOCAL_RUNTIME_IMAGE=$debian
		FLYWHEEL_LOCAL_GO_IMAGE=$golang
		FLYWHEEL_LOCAL_NODE_IMAGE=$node
		FLYWHEEL_LOCAL_PROMETHEUS_IMAGE=$prometheus
		FLYWHEEL_LOCAL_ALERTMANAGER_IMAGE=$alertmanager
		FLYWHEEL_LOCAL_MLFLOW_IMAGE=$mlflow
		FLYWHEEL_LOCAL_POSTGRES_IMAGE=$postgres
		FLYWHEEL_LOCAL_HAPROXY_IMAGE=$haproxy
	EOF
	set -a; . "$WORK/images.env"; set +a
}

# --- commands -------------------------------------------------------------
cmd=${1:-}
case $cmd in
-h | --help | help) usage; exit 0 ;;
test | images | shell) ;;
*) usage >&2; exit 2 ;;
esac
shift
if [ "$(id -u)" != 0 ]; then
	echo "containers.sh: dockerd needs root (run as root, or with sudo)" >&2
	exit 1
fi
ensure_packages
mkdir -p "$WORK"
# On exit, whatever happened: stop the engine; anything of it left makes
# the run fail.
on_exit() {
	local rc=$?
	engine_down || rc=1
	[ -z "${ENGINE_LEFT:-}" ] || rc=1
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
engine_up
case $cmd in
images)
	images
	cat "$WORK/images.env"
	;;
shell)
	ensure_plugins
	images
	say "shell with DOCKER_HOST=$DOCKER_HOST (exit to stop the engine)"
	(cd "$ROOT" && PATH=$(dirname "$DOCKER"):$PATH "${SHELL:-bash}" -i) || true
	;;
test)
	# The plugins (Go builds) and the images (mostly downloads) side by side.
	ensure_plugins &
	plugins=$!
	images
	wait "$plugins" || { echo "containers.sh: building the compose/buildx plugins failed" >&2; exit 1; }
	export DOCKER_CONFIG=$WORK/docker-config
	say "local images ready; running deploy/containertest"
	export FLYWHEEL_DOCKER=$DOCKER
	# Each test appends its figures to this report.
	rm -f "$WORK/report.txt"
	(cd "$ROOT" && $GO test -tags containers -count=1 -timeout 25m -v ./deploy/containertest "$@")
	;;
esac
