#!/bin/sh
# Course interface: generar-compose.sh <output> <N>
# Writes a compose file with the server and N agencies (see gen_compose.rs).
set -e
if [ "$#" -ne 2 ]; then
    echo "usage: $0 <output-file> <number-of-agencies>" >&2
    exit 2
fi
case "$1" in
    /*) OUT=$1 ;;
    *) OUT=$(pwd)/$1 ;;
esac
cd "$(dirname "$0")"
if [ -x target/release/gen_compose ] && [ target/release/gen_compose -nt gen_compose.rs ]; then
    exec target/release/gen_compose "$2" --output "$OUT"
fi
exec cargo run --release --quiet --bin gen_compose -- "$2" --output "$OUT"
