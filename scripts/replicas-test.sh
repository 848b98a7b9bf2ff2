#!/usr/bin/env bash
# Docker test of replicated central servers on NATS JetStream (run by `make
# docker-test` once per Compose flavour: COMPOSE="docker compose" or
# COMPOSE=docker-compose; the images, loteria-nats and loteria-netcat included,
# must be built). Six agencies, three servers behind the name `server`, a
# three-node NATS cluster (TLS on every link, sync_interval "always"); once a fifth
# of the bets are in, `docker kill` takes down the stream's leader node and the
# busiest server. Then two NATS nodes killed for a few seconds (no quorum) while
# agencies run; then a plain `down` and a new deployment, which must start empty.
# Works in a temporary copy of the deployment; touches only the project tp0, its
# network tp0_testing_net and the volumes its own compose files name.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROJECT=tp0
NETWORK=tp0_testing_net
WORK=$(mktemp -d -t loteria-replicas.XXXXXX)
VOLUMES=()

# shellcheck source=scripts/docker-lib.sh
. "$ROOT/scripts/docker-lib.sh"
deployment_of() { grep -o 'SERVER_NATS_STREAM=bets_[0-9a-f]*' "$WORK/docker-compose-dev.yaml" | head -1 | grep -o '[0-9a-f]*$'; }
# A monitoring endpoint of a NATS node, read from a container on the network.
monitor() { timeout 20 docker run --rm --network "$NETWORK" --entrypoint /bin/busybox loteria-netcat:latest wget -qO- "http://$1:8222/$2" 2>/dev/null; }
# Field $2 of a JSON document on stdin (a Python expression over `v`).
json() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)" 2>/dev/null; }
# The stream's leader node, as the monitoring of node $1 reports it.
stream_leader() {
    monitor "$1" 'jsz?streams=true' |
        json "[s['cluster']['leader'] for a in v.get('account_details', []) for s in a.get('stream_detail', []) if s['name'] == '$2'][0]"
}
stream_messages() {
    monitor "$1" 'jsz?streams=true' |
        json "[s['state']['messages'] for a in v.get('account_details', []) for s in a.get('stream_detail', []) if s['name'] == '$2'][0]"
}
wait_healthy() {
    local limit=$(( $(date +%s) + ${2:-60} ))
    until [ "$(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ]; do
        [ "$(date +%s)" -ge "$limit" ] && return 1
        sleep 0.5
    done
}
winners_of() {
    docker logs "client$1" 2>&1 | grep -o 'consulta_ganadores | result: success | cant_ganadores: [0-9]*' | grep -o '[0-9]*$'
}
same_rows() {
    python3 - "$1" "$2" <<'PY'
import sys, csv, collections, glob, os
stored = collections.defaultdict(list)
for row in csv.reader(open(sys.argv[1], newline='', encoding='utf-8')):
    stored[row[0]].append(row[1:])
want = {}
for path in glob.glob(os.path.join(sys.argv[2], 'agency-*.csv')):
    agency = os.path.basename(path)[len('agency-'):-len('.csv')]
    want[agency] = [row for row in csv.reader(open(path, newline='', encoding='utf-8'))]
sys.exit(0 if dict(stored) == want else 1)
PY
}

cleanup() {
    [ -f "$WORK/docker-compose-dev.yaml" ] && compose down -v --remove-orphans -t 2 >/dev/null 2>&1
    local ids
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    docker network rm "$NETWORK" >/dev/null 2>&1
    local v
    for v in "${VOLUMES[@]}"; do docker volume rm "$v" >/dev/null 2>&1; done
    return 0
}
finish() {
    cleanup
    rm -rf "$WORK"
    echo
    echo "replicas-test: $PASSED passed, $FAILED failed"
}
trap finish EXIT

echo "== replicas-test: compose '${COMPOSE_CMD[*]}', workdir $WORK"
cleanup
mkdir -p "$WORK/config"
cp config/server.yaml config/client.yaml "$WORK/config/"
cp docker-compose.tmpl.yaml "$WORK/"
cargo build --release --quiet --bin gen_compose --bin gen_data || { bad "build host tools"; exit 1; }
GEN_COMPOSE=$ROOT/target/release/gen_compose
GEN_DATA=$ROOT/target/release/gen_data
generate() {
    (cd "$WORK" && "$GEN_COMPOSE" "$1" --servers "$2" --output docker-compose-dev.yaml >/dev/null 2>&1)
    local id
    id=$(deployment_of)
    VOLUMES+=("tp0_nats1_$id" "tp0_nats2_$id" "tp0_nats3_$id")
    STREAM=bets_$id
}

# ---- 1. six agencies, three servers, three NATS nodes; a node and a server killed ----
echo "== 1. N=6 agencies, M=3 servers, 3 NATS nodes; the stream leader and the busiest server killed mid-ingest"
"$GEN_DATA" --agencies 6 --bets 30000 --out "$WORK/gen" > "$WORK/gen.txt"
prepare_data "$WORK/gen"
mapfile -t EXPECTED < <(grep -o 'winners: [0-9]*' "$WORK/gen.txt" | grep -o '[0-9]*$')
TOTAL=$(cat "$WORK"/.data/agency-*.csv | wc -l)
# Small batches keep ingestion going long enough to kill in the middle.
sed -i 's/^  maxAmount: [0-9]* /  maxAmount: 10 /; s/^  window: 32 /  window: 2 /' "$WORK/config/client.yaml"
grep -q 'maxAmount: 10 ' "$WORK/config/client.yaml" && grep -q 'window: 2 ' "$WORK/config/client.yaml" ||
    bad "could not edit the client config"
generate 6 3
check "the NATS key is owner-only (0600) in an owner-only directory (0700)" \
    [ "$(stat -c %a "$WORK/.keys/docker-compose-dev.nats.key")" = 600 -a "$(stat -c %a "$WORK/.keys")" = 700 ]
compose up -d >/dev/null 2>&1 || bad "compose up"
for n in 1 2 3; do
    varz=$(monitor "nats$n" varz)
    check "nats$n /varz reports \"sync_always\": true" bash -c 'grep -q "\"sync_always\": *true" <<< "$1"' _ "$varz"
    tls=$(json "(v.get('tls_required'), v['cluster'].get('tls_required'), v['cluster'].get('tls_verify'))" <<< "$varz")
    check "nats$n requires TLS of clients and verified TLS on its routes ($tls)" [ "$tls" = "(True, True, True)" ]
done
routes=$(monitor nats1 routez | json "sorted({r['remote_name'] for r in v['routes']})")
check "nats1 routes to nats2 and nats3 ($routes)" [ "$routes" = "['nats2', 'nats3']" ]
limit=$(( $(date +%s) + 120 ))
until [ "$(stored_in server1 || echo 0)" -ge $((TOTAL / 5)) ] 2>/dev/null || [ "$(date +%s)" -ge $limit ]; do sleep 0.05; done
at_kill=$(stored_in server1)
check "a fifth of the $TOTAL bets, and not all, are in before the kill ($at_kill)" \
    [ "${at_kill:-0}" -ge $((TOTAL / 5)) -a "${at_kill:-0}" -lt "$TOTAL" ]
NATS_VICTIM=$(stream_leader nats1 "$STREAM")
NATS_ROLE="the stream's leader"
case "$NATS_VICTIM" in
    nats1 | nats2 | nats3) ;;
    *) echo "    no stream leader reported ('$NATS_VICTIM'): killing nats2"; NATS_VICTIM=nats2; NATS_ROLE="a node" ;;
esac
VICTIM=server2
most=-1
for k in 1 2 3; do
    n=$(docker logs "server$k" 2>&1 | grep -c 'action: apuesta_recibida | result: success')
    echo "    server$k took $n batches before the kill"
    # Docker's DNS may leave a replica without agencies: kill the busiest one, so
    # the kill really cuts agencies off mid-ingest.
    [ "$n" -gt "$most" ] && { most=$n; VICTIM=server$k; }
done
# Agencies that met a replica not yet listening moved on to another one, so all of
# them may start on one replica; the kill then moves them to the others.
docker kill "$NATS_VICTIM" "$VICTIM" >/dev/null 2>&1
check "docker kill $NATS_VICTIM ($NATS_ROLE) and $VICTIM (the busiest server, $most batches)" \
    bash -c '[ "$(docker inspect -f "{{.State.Running}}" "$1")" = false ] && [ "$(docker inspect -f "{{.State.Running}}" "$2")" = false ]' _ "$NATS_VICTIM" "$VICTIM"
SURVIVORS=()
for k in 1 2 3; do [ "server$k" != "$VICTIM" ] && SURVIVORS+=("server$k"); done
check "all six agencies finished" wait_clients 6 240
for k in 1 2 3 4 5 6; do
    got=$(winners_of "$k")
    check "client$k cant_ganadores ${got:-none} = ${EXPECTED[$((k-1))]}" [ "${got:-x}" = "${EXPECTED[$((k-1))]}" ]
done
check "every agency exited with code 0" all_exit_zero client1 client2 client3 client4 client5 client6
took=0
for k in 1 2 3; do
    n=$(docker logs "server$k" 2>&1 | grep -c 'action: apuesta_recibida | result: success')
    [ "$n" -gt 0 ] && took=$((took + 1))
done
check "batches went to at least two replicas over the run, so the stream, not one server, holds the draw ($took)" [ "$took" -ge 2 ]
for s in "${SURVIVORS[@]}"; do
    check "docker exec $s sh -c 'wc -l < bets.csv' = $TOTAL ($(stored_in "$s"))" [ "$(stored_in "$s")" = "$TOTAL" ]
done
for s in "${SURVIVORS[@]}"; do
    docker exec "$s" cat bets.csv > "$WORK/stored-$s.csv"
    check "$s's view holds every bet exactly once, in each agency's order" same_rows "$WORK/stored-$s.csv" "$WORK/gen"
done
for k in 1 2 3; do
    check "server$k speaks TLS 1.3 to agencies" bash -c "docker logs server$k 2>&1 | grep -q 'action: tls | result: success | mode: TLS 1.3'"
done
plain=$(for k in 1 2 3; do docker logs "server$k" 2>&1; done | grep -c 'action: plain_connection')
check "every agency came over TLS to the replicas (plain connections: $plain)" [ "$plain" = 0 ]
reconnects=$(for k in 1 2 3 4 5 6; do docker logs "client$k" 2>&1; done | grep -c 'action: reconnect')
check "agencies reconnected after the kill ($reconnects)" [ "$reconnects" -ge 1 ]
HEADS=()
for s in "${SURVIVORS[@]}"; do
    line=$(docker logs "$s" 2>&1 | grep 'action: sorteo | result: success' | tail -1)
    check "$s drew over all $TOTAL bets" bash -c 'grep -q "bets: $2 " <<< "$1"' _ "$line" "$TOTAL"
    [ -n "$line" ] && HEADS+=("$(echo "$line" | grep -o 'head: [0-9a-f]*' | grep -o '[0-9a-f]*$')")
done
distinct=$(printf '%s\n' "${HEADS[@]}" | sort -u | grep -c . || true)
first_head=${HEADS[0]:-}
check "every surviving replica's sorteo line carries the same chain head (${HEADS[*]:-none})" \
    bash -c '[ "$1" = 2 ] && [ "$2" = 1 ] && [ "$3" = 64 ]' _ "${#HEADS[@]}" "$distinct" "${#first_head}"
# The killed node and server come back and catch up from the cluster.
docker start "$NATS_VICTIM" "$VICTIM" >/dev/null 2>&1
check "$NATS_VICTIM is healthy again" wait_healthy "$NATS_VICTIM" 60
LIVE_NATS=nats1
[ "$NATS_VICTIM" = nats1 ] && LIVE_NATS=nats2
want=$(stream_messages "$LIVE_NATS" "$STREAM")
limit=$(( $(date +%s) + 30 ))
until [ "$(stream_messages "$NATS_VICTIM" "$STREAM")" = "$want" ] || [ "$(date +%s)" -ge $limit ]; do sleep 0.5; done
check "$NATS_VICTIM caught up: $(stream_messages "$NATS_VICTIM" "$STREAM") stream messages = $LIVE_NATS's ${want:-none}" \
    bash -c '[ -n "$1" ] && [ "$1" = "$2" ]' _ "$want" "$(stream_messages "$NATS_VICTIM" "$STREAM")"
limit=$(( $(date +%s) + 60 ))
until [ "$(stored_in "$VICTIM")" = "$TOTAL" ] || [ "$(date +%s)" -ge $limit ]; do sleep 0.5; done
check "$VICTIM, started again, rebuilt its view from the stream: $TOTAL rows ($(stored_in "$VICTIM"))" \
    [ "$(stored_in "$VICTIM")" = "$TOTAL" ]
compose stop -t 10 >/dev/null 2>&1
compose logs --no-color > "$WORK/logs1.txt" 2>&1
grep -h 'action: close_view\|action: close_store' "$WORK/logs1.txt" | sed 's/^/    /' | cut -c1-300

# ---- 2. the quorum lost for a few seconds while agencies run -----------------
echo "== 2. two NATS nodes killed for 5 s mid-ingest (no quorum), then started again"
compose down -v >/dev/null 2>&1
"$GEN_DATA" --agencies 3 --bets 20000 --out "$WORK/quorum" > "$WORK/quorum.txt"
prepare_data "$WORK/quorum"
mapfile -t EXPECTED < <(grep -o 'winners: [0-9]*' "$WORK/quorum.txt" | grep -o '[0-9]*$')
TOTAL=$(cat "$WORK"/.data/agency-*.csv | wc -l)
generate 3 2
compose up -d >/dev/null 2>&1 || bad "compose up"
limit=$(( $(date +%s) + 120 ))
until [ "$(stored_in server1 || echo 0)" -ge $((TOTAL / 5)) ] 2>/dev/null || [ "$(date +%s)" -ge $limit ]; do sleep 0.05; done
at_stop=$(stored_in server1)
docker kill nats2 nats3 >/dev/null 2>&1
check "nats2 and nats3 killed with $at_stop of $TOTAL bets in" [ "${at_stop:-0}" -lt "$TOTAL" ]
sleep 2
before=$(stored_in server1)
sleep 3
after=$(stored_in server1)
refused=$(for c in server1 server2 client1 client2 client3; do docker logs "$c" 2>&1; done | grep -c 'unavailable')
check "without a quorum the view stands still for 3 s ($before -> $after) and batches are refused ($refused lines)" \
    bash -c '[ -n "$1" ] && [ "$1" = "$2" ] && [ "$1" -lt "$3" ] && [ "$4" -ge 1 ]' _ "$before" "$after" "$TOTAL" "$refused"
running=$(for s in server1 server2; do docker inspect -f '{{.State.Running}}' "$s"; done | grep -c true)
check "no server exited without a quorum ($running of 2 running)" [ "$running" = 2 ]
docker start nats2 nats3 >/dev/null 2>&1
check "the agencies finished once the quorum was back" wait_clients 3 240
for k in 1 2 3; do
    got=$(winners_of "$k")
    check "client$k cant_ganadores ${got:-none} = ${EXPECTED[$((k-1))]}" [ "${got:-x}" = "${EXPECTED[$((k-1))]}" ]
done
check "its agencies exited with code 0" all_exit_zero client1 client2 client3
docker exec server2 cat bets.csv > "$WORK/stored-quorum.csv"
check "server2's view holds every bet exactly once ($(stored_in server2) = $TOTAL)" same_rows "$WORK/stored-quorum.csv" "$WORK/quorum"
compose stop -t 10 >/dev/null 2>&1

# ---- 3. a plain down, then a new deployment with replicas starts empty -------
echo "== 3. plain down, then a new replicated deployment starts from an empty stream"
compose down >/dev/null 2>&1
OLD_STREAM=$STREAM
"$GEN_DATA" --agencies 2 --bets 500 --out "$WORK/next" > /dev/null
prepare_data "$WORK/next"
generate 2 2
check "the new generation names a new stream and new volumes ($STREAM != $OLD_STREAM)" [ "$STREAM" != "$OLD_STREAM" ]
compose up -d >/dev/null 2>&1 || bad "compose up"
check "the next deployment's agencies finished" wait_clients 2 120
check "the next deployment stores only its own 1000 bets ($(stored_in server2))" [ "$(stored_in server2)" = 1000 ]
check "its agencies exited with code 0" all_exit_zero client1 client2
compose stop -t 10 >/dev/null 2>&1
id=$(deployment_of)
compose down -v >/dev/null 2>&1
check "down -v removes the deployment's NATS volumes" \
    bash -c "! docker volume inspect tp0_nats1_$id tp0_nats2_$id tp0_nats3_$id >/dev/null 2>&1"
[ "$FAILED" = 0 ]
