#!/usr/bin/env bash
# Docker test of replicated central servers (run by `make docker-test` once per
# Compose flavour: COMPOSE="docker compose" or COMPOSE=docker-compose; the images
# must be built). Six agencies, three servers behind the name `server` sharing one
# store volume; one replica is SIGKILLed once a fifth of the bets are in. Then a
# plain `down` and a new deployment with replicas, which must start empty. Works
# in a temporary copy of the deployment; touches only the project tp0, its network
# tp0_testing_net and the volumes its own compose files name.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROJECT=tp0
NETWORK=tp0_testing_net
WORK=$(mktemp -d -t loteria-replicas.XXXXXX)
VOLUMES=()

# shellcheck source=scripts/docker-lib.sh
. "$ROOT/scripts/docker-lib.sh"
volume_of() { grep -o 'tp0_bets_[0-9a-f]*' "$WORK/docker-compose-dev.yaml" | head -1; }

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

# ---- 1. six agencies, three replicas, one SIGKILLed at a fifth of the bets ----
echo "== 1. N=6 agencies, M=3 servers, one replica SIGKILLed mid-ingest"
"$GEN_DATA" --agencies 6 --bets 30000 --out "$WORK/gen" > "$WORK/gen.txt"
prepare_data "$WORK/gen"
mapfile -t EXPECTED < <(grep -o 'winners: [0-9]*' "$WORK/gen.txt" | grep -o '[0-9]*$')
TOTAL=$(cat "$WORK"/.data/agency-*.csv | wc -l)
# Small batches keep ingestion going long enough to kill a replica in the middle.
sed -i 's/^  maxAmount: [0-9]* /  maxAmount: 10 /; s/^  window: 32 /  window: 2 /' "$WORK/config/client.yaml"
grep -q 'maxAmount: 10 ' "$WORK/config/client.yaml" && grep -q 'window: 2 ' "$WORK/config/client.yaml" ||
    bad "could not edit the client config"
(cd "$WORK" && "$GEN_COMPOSE" 6 --servers 3 --output docker-compose-dev.yaml >/dev/null 2>&1)
VOLUMES+=("$(volume_of)")
compose up -d >/dev/null 2>&1
limit=$(( $(date +%s) + 90 ))
until [ "$(stored_in server1 || echo 0)" -ge $((TOTAL / 5)) ] 2>/dev/null || [ "$(date +%s)" -ge $limit ]; do sleep 0.05; done
at_kill=$(stored_in server1)
check "a fifth of the $TOTAL bets, and not all, are in before the kill ($at_kill)" \
    [ "${at_kill:-0}" -ge $((TOTAL / 5)) -a "${at_kill:-0}" -lt "$TOTAL" ]
took=0
VICTIM=server2
most=-1
for k in 1 2 3; do
    n=$(docker logs "server$k" 2>&1 | grep -c 'action: apuesta_recibida | result: success')
    echo "    server$k took $n batches before the kill"
    [ "$n" -gt 0 ] && took=$((took + 1))
    # Docker's DNS may leave a replica without agencies: kill the busiest one, so
    # the kill really cuts agencies off mid-ingest.
    [ "$n" -gt "$most" ] && { most=$n; VICTIM=server$k; }
done
SURVIVORS=()
for k in 1 2 3; do [ "server$k" != "$VICTIM" ] && SURVIVORS+=("server$k"); done
check "at least two replicas took batches before the kill ($took)" [ "$took" -ge 2 ]
# SIGKILL from the host (the process, like a crash): the agencies it served move on.
pid=$(docker inspect -f '{{.State.Pid}}' "$VICTIM")
kill -9 "$pid" 2>/dev/null
check "$VICTIM (the busiest replica, $most batches) SIGKILLed mid-ingest (pid $pid)" [ -n "$pid" -a "$pid" != 0 ]
check "all six agencies finished" wait_clients 6 180
for k in 1 2 3 4 5 6; do
    got=$(docker logs "client$k" 2>&1 | grep -o 'consulta_ganadores | result: success | cant_ganadores: [0-9]*' | grep -o '[0-9]*$')
    check "client$k cant_ganadores ${got:-none} = ${EXPECTED[$((k-1))]}" [ "${got:-x}" = "${EXPECTED[$((k-1))]}" ]
done
check "every agency exited with code 0" all_exit_zero client1 client2 client3 client4 client5 client6
for s in "${SURVIVORS[@]}"; do
    check "docker exec $s sh -c 'wc -l < bets.csv' = $TOTAL ($(stored_in "$s"))" [ "$(stored_in "$s")" = "$TOTAL" ]
done
docker exec "${SURVIVORS[0]}" cat bets.csv > "$WORK/stored.csv"
check "the shared file holds every bet exactly once, in each agency's order" python3 - "$WORK/stored.csv" "$WORK/gen" <<'PY'
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
for k in 1 2 3; do
    check "server$k speaks TLS 1.3" bash -c "docker logs server$k 2>&1 | grep -q 'action: tls | result: success | mode: TLS 1.3'"
done
plain=$(for k in 1 2 3; do docker logs "server$k" 2>&1; done | grep -c 'action: plain_connection')
check "every agency came over TLS to the replicas (plain connections: $plain)" [ "$plain" = 0 ]
reconnects=$(for k in 1 2 3 4 5 6; do docker logs "client$k" 2>&1; done | grep -c 'action: reconnect')
check "agencies reconnected after the kill ($reconnects)" [ "$reconnects" -ge 1 ]
HEADS=()
for s in "${SURVIVORS[@]}"; do
    line=$(docker logs "$s" 2>&1 | grep 'action: sorteo | result: success' | tail -1)
    [ -n "$line" ] && check "$s drew over all $TOTAL bets" bash -c "echo '$line' | grep -q 'bets: $TOTAL '"
    [ -n "$line" ] && HEADS+=("$(echo "$line" | grep -o 'head: [0-9a-f]*' | grep -o '[0-9a-f]*$')")
done
distinct=$(printf '%s\n' "${HEADS[@]}" | sort -u | grep -c . || true)
first_head=${HEADS[0]:-}
check "every replica's sorteo line carries the same chain head (${HEADS[*]:-none})" \
    bash -c '[ "$1" -ge 1 ] && [ "$2" = 1 ] && [ "$3" = 64 ]' _ "${#HEADS[@]}" "$distinct" "${#first_head}"
compose stop -t 10 >/dev/null 2>&1
compose logs --no-color > "$WORK/logs1.txt" 2>&1
grep -h 'action: close_store' "$WORK/logs1.txt" | sed 's/^/    /' | cut -c1-400

# ---- 2. a plain down, then a new deployment with replicas starts empty -------
echo "== 2. plain down, then a new replicated deployment starts from an empty store"
compose down >/dev/null 2>&1
"$GEN_DATA" --agencies 2 --bets 500 --out "$WORK/next" > /dev/null
prepare_data "$WORK/next"
(cd "$WORK" && "$GEN_COMPOSE" 2 --servers 2 --output docker-compose-dev.yaml >/dev/null 2>&1)
VOLUMES+=("$(volume_of)")
check "the new generation names a new volume (${VOLUMES[1]} != ${VOLUMES[0]})" [ "${VOLUMES[1]}" != "${VOLUMES[0]}" ]
compose up -d >/dev/null 2>&1
check "the next deployment's agencies finished" wait_clients 2 120
check "the next deployment stores only its own 1000 bets ($(stored_in server2))" [ "$(stored_in server2)" = 1000 ]
check "its agencies exited with code 0" all_exit_zero client1 client2
compose stop -t 10 >/dev/null 2>&1
compose down -v >/dev/null 2>&1
check "down -v removes the deployment's volume" bash -c "! docker volume inspect ${VOLUMES[1]} >/dev/null 2>&1"
[ "$FAILED" = 0 ]
