#!/bin/sh
# Course exercise 3: checks that the server answers an Echo frame byte for byte.
# netcat runs in a container attached to the compose network: no netcat on the
# host and no published ports. Prints exactly one result line and exits 0 / 1.
#   NETWORK (tp0_testing_net), SERVER_HOST (server), SERVER_PORT (12345),
#   NETCAT_IMAGE (loteria-netcat:latest, built from Debian's busybox-static when
#   missing; falls back to the registry's busybox image on a machine that has one).
NETWORK=${NETWORK:-tp0_testing_net}
SERVER_HOST=${SERVER_HOST:-server}
SERVER_PORT=${SERVER_PORT:-12345}
IMAGE=${NETCAT_IMAGE:-loteria-netcat:latest}

fail() {
    echo "action: test_echo_server | result: fail"
    exit 1
}

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    if [ -f /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q 'not a dynamic'; then
        ctx=$(mktemp -d) || fail
        cp /bin/busybox "$ctx/busybox" && printf 'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n' > "$ctx/Dockerfile" \
            && docker build -q -t "$IMAGE" "$ctx" >/dev/null 2>&1
        rm -rf "$ctx"
    fi
    docker image inspect "$IMAGE" >/dev/null 2>&1 || IMAGE=busybox:latest
fi

# An Echo frame: type 0x01, payload length 5 (u32 big-endian), payload "hello".
EXPECTED="01 00 00 00 05 68 65 6c 6c 6f"
GOT=$(docker run --rm --network "$NETWORK" --entrypoint /bin/busybox "$IMAGE" \
    sh -c "printf '\\001\\000\\000\\000\\005hello' | nc -w 3 '$SERVER_HOST' '$SERVER_PORT' | od -An -tx1" 2>/dev/null) || fail
GOT=$(echo $GOT)
if [ "$GOT" = "$EXPECTED" ]; then
    echo "action: test_echo_server | result: success"
    exit 0
fi
fail
