#!/bin/sh
# Course interface: generar-compose.sh <output> <N> [M]
# Writes a compose file with N agencies and the central server, or M >= 2
# replicas of it on a three-node NATS JetStream cluster (see gen_compose.rs).
# M defaults to 1.
set -e
if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
    echo "usage: $0 <output-file> <number-of-agencies> [number-of-servers]" >&2
    exit 2
fi
case "$1" in
    /*) OUT=$1 ;;
    *) OUT=$(pwd)/$1 ;;
esac
SERVERS=${3:-1}
cd "$(dirname "$0")"
if [ -x target/release/gen_compose ] && [ target/release/gen_compose -nt gen_compose.rs ]; then
    exec target/release/gen_compose "$2" --servers "$SERVERS" --output "$OUT"
fi
exec cargo run --release --quiet --bin gen_compose -- "$2" --servers "$SERVERS" --output "$OUT"
