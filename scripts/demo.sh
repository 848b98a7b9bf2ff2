#!/usr/bin/env bash
# The whole system as local processes: a server on a free port and N agencies
# over generated data, with interleaved logs, ending with each agency's winners.
# The links are TLS 1.3 with a CA made for this run by gen_pki (its key is not kept).
# Usage: scripts/demo.sh [AGENCIES] [BETS_PER_AGENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
AGENCIES=${1:-5}
BETS=${2:-20000}
BIN=target/release
WORK=$(mktemp -d -t loteria-demo.XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -TERM "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet --bin server --bin client --bin gen_data --bin gen_pki
cargo build --release --quiet --bin server --bin client --bin gen_data --bin verify
echo "== generating $AGENCIES agencies x $BETS bets in $WORK/data"
"$BIN/gen_data" --agencies "$AGENCIES" --bets "$BETS" --out "$WORK/data" | sed 's/^/[gen_data] /'

echo "== generating a fresh key per agency in $WORK/agency-keys.csv"
# 32 random bytes per agency from the kernel, as hex; the file is readable by its owner only.
(
    umask 077
    for id in $(seq "$AGENCIES"); do
        printf '%s,%s\n' "$id" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    done > "$WORK/agency-keys.csv"
)
echo "== making this run's CA and the server's certificate in $WORK/.keys"
"$BIN/gen_pki" --dir "$WORK/.keys" --stem demo | sed 's/^/[gen_pki] /'
key_of() { grep "^$1," "$WORK/agency-keys.csv" | cut -d, -f2; }
# The deployment's chain key seals the store; it lives apart from the store's folder.
mkdir -p "$WORK/keys" "$WORK/store"
( umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$WORK/keys/chain.key"; echo >> "$WORK/keys/chain.key" )

echo "== starting the server"
SERVER_PORT=0 SERVER_AGENCIES=$AGENCIES SERVER_STORAGE_PATH="$WORK/bets.csv" SERVER_CONFIG=config/server.yaml \
    SERVER_AUTH_KEYS="$WORK/agency-keys.csv" SERVER_TLS_CERT="$WORK/.keys/demo.server.pem" \
    SERVER_TLS_KEY="$WORK/.keys/demo.server.key" "$BIN/server" > >(tee "$WORK/server.log" | sed -u 's/^/[server]  /') &
SERVER_PORT=0 SERVER_AGENCIES=$AGENCIES SERVER_STORAGE_PATH="$WORK/store/bets.csv" SERVER_CONFIG=config/server.yaml \
    SERVER_AUTH_KEYS="$WORK/agency-keys.csv" SERVER_CHAIN_KEY="$WORK/keys/chain.key" "$BIN/server" > >(tee "$WORK/server.log" | sed -u 's/^/[server]  /') &
SERVER_PID=$!
PORT=
for _ in $(seq 100); do
    PORT=$(grep -o 'accept_connections.*address: [0-9.]*:[0-9]*' "$WORK/server.log" 2>/dev/null | grep -o '[0-9]*$' || true)
    [ -n "$PORT" ] && break
    sleep 0.1
done
[ -n "$PORT" ] || { echo "the server did not start"; exit 1; }

echo "== starting $AGENCIES agencies against 127.0.0.1:$PORT"
pids=()
for id in $(seq "$AGENCIES"); do
    CLI_ID=$id CLI_SERVER_ADDRESS=127.0.0.1:$PORT CLI_DATA_PATH="$WORK/data/agency-{id}.csv" CLI_CONFIG=config/client.yaml \
        CLI_AUTH_KEY="$(key_of "$id")" CLI_TLS_CA="$WORK/.keys/demo.ca.pem" "$BIN/client" > >(tee "$WORK/client$id.log" | sed -u "s/^/[client$id] /") &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
sleep 0.2
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || status=1
sleep 0.2

echo
echo "== winners per agency (expected from gen_data in brackets)"
for id in $(seq "$AGENCIES"); do
    got=$(grep -o 'cant_ganadores: [0-9]*' "$WORK/client$id.log" | grep -o '[0-9]*$' || echo "?")
    want=$(grep -c "^$id," "$WORK/data/expected-winners.csv" || true)
    echo "agency $id: $got winners [$want]"
done
echo "stored rows: $(wc -l < "$WORK/store/bets.csv"); sorteo lines: $(grep -c 'action: sorteo' "$WORK/server.log")"
echo
echo "== verify: the auditor's recomputation of the store (its head must be the sorteo line's)"
"$BIN/verify" --store "$WORK/store/bets.csv" --key "$WORK/keys/chain.key" --agencies "$AGENCIES" | tail -1 || status=1
grep 'action: sorteo' "$WORK/server.log" | grep -o 'head: [0-9a-f]*' | sed 's/^/sorteo /' || status=1
exit $status
