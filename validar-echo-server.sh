#!/bin/sh
# Course exercise 3: checks that the server answers an Echo frame byte for byte.
# netcat runs in a container attached to the compose network: no netcat on the
# host and no published ports. Prints exactly one result line on stdout and exits
# 0 / 1; when the check cannot run at all, stderr says why and how to fix it.
#   NETWORK (tp0_testing_net), SERVER_HOST (server), SERVER_PORT (12345), BUSYBOX (/bin/busybox),
#   NETCAT_IMAGE (loteria-netcat:latest, built here from a static /bin/busybox when
#   missing; `make netcat-image` builds it, `make deps` installs busybox-static).
NETWORK=${NETWORK:-tp0_testing_net}
SERVER_HOST=${SERVER_HOST:-server}
SERVER_PORT=${SERVER_PORT:-12345}
IMAGE=${NETCAT_IMAGE:-loteria-netcat:latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}

fail() {
    echo "action: test_echo_server | result: fail"
    exit 1
}
cannot_run() {
    echo "validar-echo-server: cannot run the check: $*" >&2
    fail
}

command -v docker >/dev/null 2>&1 || cannot_run "no docker command on this machine"
docker info >/dev/null 2>&1 || cannot_run "the Docker engine does not answer (is it running? may this user use it?)"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    if [ -f "$BUSYBOX" ] && ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic'; then
        ctx=$(mktemp -d) || cannot_run "mktemp failed"
        cp "$BUSYBOX" "$ctx/busybox" && printf 'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n' > "$ctx/Dockerfile" \
            && docker build -q -t "$IMAGE" "$ctx" >/dev/null 2>&1
        rm -rf "$ctx"
    fi
    if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
        # A machine that can reach a registry may already hold busybox.
        if docker image inspect busybox:latest >/dev/null 2>&1; then
            IMAGE=busybox:latest
        else
            cannot_run "no netcat image ($IMAGE), no static busybox ($BUSYBOX) to build it from, and no busybox:latest image. Fix: 'make netcat-image' (after 'make deps', which installs Debian's busybox-static)"
        fi
    fi
fi
docker network inspect "$NETWORK" >/dev/null 2>&1 \
    || cannot_run "the network $NETWORK does not exist: start the deployment first ('make docker-compose-up')"

# An Echo frame: type 0x01, payload length 5 (u32 big-endian), payload "hello".
EXPECTED="01 00 00 00 05 68 65 6c 6c 6f"
ERR=$(mktemp) || cannot_run "mktemp failed"
GOT=$(docker run --rm --network "$NETWORK" --entrypoint /bin/busybox "$IMAGE" \
    sh -c "printf '\\001\\000\\000\\000\\005hello' | nc -w 3 '$SERVER_HOST' '$SERVER_PORT' | od -An -tx1" 2>"$ERR")
RC=$?
if [ $RC -ne 0 ]; then
    MSG=$(cat "$ERR"); rm -f "$ERR"
    cannot_run "docker run $IMAGE exited $RC: $MSG"
fi
rm -f "$ERR"
GOT=$(echo $GOT)
if [ "$GOT" = "$EXPECTED" ]; then
    echo "action: test_echo_server | result: success"
    exit 0
fi
fail
