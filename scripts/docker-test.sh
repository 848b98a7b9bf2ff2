#!/usr/bin/env bash
# Docker end-to-end test against the real engine (run by `make docker-test`,
# which builds the images first, once per Compose flavour: COMPOSE="docker compose"
# or COMPOSE=docker-compose). Works in a temporary copy of the deployment
# (config/, .data/, the compose file) so the user's tree is never touched, and
# touches only the project's own containers (compose project tp0), its network
# tp0_testing_net and its helper containers tp0-*.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROJECT=tp0
NETWORK=tp0_testing_net
FLAVOURS=()
command -v docker-compose >/dev/null 2>&1 && FLAVOURS+=("docker-compose")
docker compose version >/dev/null 2>&1 && FLAVOURS+=("docker compose")
WORK=$(mktemp -d -t loteria-docker.XXXXXX)
DEADLINE=$(( $(date +%s) + 900 ))   # the whole test is bounded to 15 minutes

# shellcheck source=scripts/docker-lib.sh
. "$ROOT/scripts/docker-lib.sh"

cleanup() {
    docker rm -f tp0-mirror tp0-alter >/dev/null 2>&1
    [ -f "$WORK/docker-compose-dev.yaml" ] && compose down -v --remove-orphans -t 2 >/dev/null 2>&1
    local ids
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    docker network rm "$NETWORK" >/dev/null 2>&1
    return 0
}
finish() {
    cleanup
    rm -rf "$WORK"
    echo
    echo "docker-test: $PASSED passed, $FAILED failed"
    echo "$PASSED passed, $FAILED failed"
}
trap finish EXIT

out_of_time() { [ "$(date +%s)" -ge "$DEADLINE" ]; }

echo "== docker-test: compose '${COMPOSE_CMD[*]}' (flavours: ${FLAVOURS[*]}), workdir $WORK"
cleanup
mkdir -p "$WORK/config"
cp config/server.yaml config/client.yaml docker-compose.tmpl.yaml "$WORK/"
mv "$WORK/server.yaml" "$WORK/client.yaml" "$WORK/config/"
cargo build --release --quiet --bin gen_compose --bin gen_data || { bad "build host tools"; exit 1; }
GEN_COMPOSE=$ROOT/target/release/gen_compose
GEN_DATA=$ROOT/target/release/gen_data

# ---- 1. five agencies end to end --------------------------------------------
echo "== 1. five agencies, one draw"
COURSE=$ROOT/../shared/datasets/tp0
if [ -f "$COURSE/agency-1.csv" ]; then
    echo "  data: course dataset ($COURSE)"
    prepare_data "$COURSE"
    EXPECTED=(2 3 3 2 0)
else
    echo "  data: generated (course dataset folder $COURSE is absent)"
    "$GEN_DATA" --agencies 5 --bets 20000 --out "$WORK/gen" > "$WORK/gen.txt"
    prepare_data "$WORK/gen"
    mapfile -t EXPECTED < <(grep -o 'winners: [0-9]*' "$WORK/gen.txt" | grep -o '[0-9]*$')
fi
(cd "$WORK" && "$GEN_COMPOSE" 5 --output docker-compose-dev.yaml >/dev/null)
compose up -d >/dev/null 2>&1
check "all five agencies finished" wait_clients 5 180
compose logs --no-color > "$WORK/logs1.txt" 2>&1
for k in 1 2 3 4 5; do
    got=$(grep "^client$k " "$WORK/logs1.txt" | grep -o 'consulta_ganadores | result: success | cant_ganadores: [0-9]*' | grep -o '[0-9]*$')
    check "client$k cant_ganadores ${got:-none} = ${EXPECTED[$((k-1))]}" [ "${got:-x}" = "${EXPECTED[$((k-1))]}" ]
done
check "the server speaks TLS 1.3" grep -q '^server .*action: tls | result: success | mode: TLS 1.3' "$WORK/logs1.txt"
plain=$(grep -c 'action: plain_connection' "$WORK/logs1.txt")
check "every agency came over TLS (plain connections: $plain)" [ "$plain" = 0 ]
tls_auth=$(grep -c '^server .*action: auth | result: success' "$WORK/logs1.txt")
check "five agencies proved their keys inside TLS ($tls_auth)" [ "$tls_auth" = 5 ]
check "the agencies hold the CA certificate only" bash -c "! grep -q 'PRIVATE KEY' '$WORK'/.keys/docker-compose-dev.ca.pem && grep -q 'PRIVATE KEY' '$WORK'/.keys/docker-compose-dev.server.key"
check "the server key is owner-only (0600)" [ "$(stat -c %a "$WORK/.keys/docker-compose-dev.server.key")" = 600 ]
sorteos=$(grep -c 'action: sorteo | result: success' "$WORK/logs1.txt")
check "exactly one sorteo line ($sorteos)" [ "$sorteos" = 1 ]
HEAD=$(grep 'action: sorteo | result: success' "$WORK/logs1.txt" | grep -o 'head: [0-9a-f]*' | grep -o '[0-9a-f]*$' || true)
check "the sorteo line carries a 64-digit chain head (${HEAD:-none})" bash -c "[ \${#1} = 64 ]" _ "$HEAD"
check "every client exited with code 0" all_exit_zero client1 client2 client3 client4 client5
TOTAL=$(cat "$WORK"/.data/agency-*.csv | wc -l)
check "docker exec server sh -c 'wc -l < bets.csv' = $TOTAL ($(stored_in server))" [ "$(stored_in server)" = "$TOTAL" ]
# A restart of the same container keeps the bets and the Dones.
docker restart -t 10 server >/dev/null
check "after docker restart the server still holds $TOTAL rows ($(stored_in server))" [ "$(stored_in server)" = "$TOTAL" ]
compose stop -t 10 server >/dev/null 2>&1; compose start server >/dev/null 2>&1
check "after stop/start the server still holds $TOTAL rows ($(stored_in server))" [ "$(stored_in server)" = "$TOTAL" ]
limit=$(( $(date +%s) + 30 ))
until docker logs server 2>&1 | grep -q 'action: open_store | result: success .*agencies_done: 5' || [ "$(date +%s)" -ge $limit ]; do sleep 0.2; done
check "the restarted server reopened the store with all 5 agencies done" \
    bash -c "docker logs server 2>&1 | grep -q 'action: open_store | result: success | path: /var/lib/loteria/bets.csv | rows: $TOTAL .*agencies_done: 5'"

# ---- 2. echo validation -----------------------------------------------------
echo "== 2. validar-echo-server.sh"
out=$(sh ./validar-echo-server.sh); rc=$?
check "echo against our server: '$out'" [ "$out" = "action: test_echo_server | result: success" -a $rc = 0 ]
# A plain request other than Echo (Resume for agency 1) on the TLS port: a Nack (0x82), then closed.
got=$(docker run --rm --network "$NETWORK" --entrypoint /bin/busybox loteria-netcat:latest \
    sh -c "printf '\\006\\000\\000\\000\\004\\000\\000\\000\\001' | nc -w 3 server 12345 | od -An -tx1 | head -1" 2>/dev/null)
check "a plain Resume on the TLS port is refused with a Nack ($(echo $got | cut -c1-2))" [ "$(echo $got | cut -c1-2)" = 82 ]
docker run -d --rm --name tp0-mirror --network "$NETWORK" --entrypoint /bin/busybox loteria-netcat:latest nc -ll -p 12345 -e /bin/busybox cat >/dev/null
docker run -d --rm --name tp0-alter --network "$NETWORK" --entrypoint /bin/busybox loteria-netcat:latest nc -ll -p 12345 -e /bin/busybox tr a-z A-Z >/dev/null
sleep 0.5
out=$(SERVER_HOST=tp0-mirror sh ./validar-echo-server.sh); rc=$?
check "echo against a plain byte mirror: '$out'" [ "$out" = "action: test_echo_server | result: success" -a $rc = 0 ]
out=$(SERVER_HOST=tp0-alter sh ./validar-echo-server.sh); rc=$?
check "echo against a server that alters bytes: '$out'" [ "$out" = "action: test_echo_server | result: fail" -a $rc != 0 ]
docker rm -f tp0-mirror tp0-alter >/dev/null 2>&1
err=$(BUSYBOX=/nonexistent NETCAT_IMAGE=tp0-no-such-image:latest sh ./validar-echo-server.sh 2>&1 >/dev/null); rc=$?
out=$(BUSYBOX=/nonexistent NETCAT_IMAGE=tp0-no-such-image:latest sh ./validar-echo-server.sh 2>/dev/null)
check "echo without any netcat: fail line, exit 1, stderr says why and names the fix" \
    [ "$out" = "action: test_echo_server | result: fail" -a $rc = 1 -a -n "$(echo "$err" | grep 'make netcat-image')" ]
compose stop -t 10 server >/dev/null 2>&1
out=$(sh ./validar-echo-server.sh); rc=$?
check "echo with the server stopped: '$out'" [ "$out" = "action: test_echo_server | result: fail" -a $rc != 0 ]
check "server exited with code 0 on stop" all_exit_zero server
compose down -v >/dev/null 2>&1

# ---- 3. config edited without rebuilding ------------------------------------
echo "== 3. config change takes effect on the next up, no rebuild"
sed -i 's/^  level: INFO /  level: DEBUG /' "$WORK/config/client.yaml"
grep -q 'level: DEBUG' "$WORK/config/client.yaml" || bad "could not edit the client config"
compose up -d >/dev/null 2>&1
check "agencies finished again" wait_clients 5 180
compose logs --no-color client1 > "$WORK/logs3.txt" 2>&1
check "client1 config line shows log_level: DEBUG" grep -q 'action: config | result: success | client_id: 1 .*log_level: DEBUG' "$WORK/logs3.txt"
check "client1 logs DEBUG lines" grep -q ' DEBUG    action: batch_enviado' "$WORK/logs3.txt"
compose down -v >/dev/null 2>&1
sed -i 's/^  level: DEBUG /  level: INFO /' "$WORK/config/client.yaml"

# ---- 4. gen_compose for several N, with every Compose flavour ---------------
echo "== 4. gen_compose N = 0, 1, 10 and bad N"
for n in 0 1 10; do
    (cd "$WORK" && "$GEN_COMPOSE" "$n" --output "dc-$n.yaml" >/dev/null)
    services=$(grep -c '^    container_name: ' "$WORK/dc-$n.yaml")
    check "N=$n renders $((n + 1)) services ($services)" [ "$services" = $((n + 1)) ]
    for flavour in "${FLAVOURS[@]}"; do
        # shellcheck disable=SC2086
        check "N=$n passes '$flavour config'" bash -c "cd '$WORK' && $flavour -p $PROJECT -f dc-$n.yaml config -q"
    done
done
for badn in -1 abc 2.5 ""; do
    rm -f "$WORK/dc-bad.yaml"
    (cd "$WORK" && "$GEN_COMPOSE" $badn --output dc-bad.yaml >/dev/null 2>&1); rc=$?
    check "bad N '${badn}' refused (exit $rc) and nothing written" [ $rc != 0 -a ! -e "$WORK/dc-bad.yaml" ]
done
(cd "$WORK" && bash "$ROOT/generar-compose.sh" dc-course.yaml 3 >/dev/null)
check "generar-compose.sh writes 3 agencies" grep -q 'container_name: client3' "$WORK/dc-course.yaml"
(cd "$WORK" && "$GEN_COMPOSE" 4 --servers 3 --output dc-r3.yaml >/dev/null)
services=$(grep -c '^    container_name: ' "$WORK/dc-r3.yaml")
check "N=4 M=3 renders 10 services: 4 agencies, 3 servers, 3 NATS nodes ($services)" [ "$services" = 10 ]
for flavour in "${FLAVOURS[@]}"; do
    # shellcheck disable=SC2086
    check "N=4 M=3 passes '$flavour config'" bash -c "cd '$WORK' && $flavour -p $PROJECT -f dc-r3.yaml config -q"
done
(cd "$WORK" && bash "$ROOT/generar-compose.sh" dc-course-r.yaml 3 2 >/dev/null)
check "generar-compose.sh FILE 3 2 writes server2, nats3 and their NATS configuration" \
    bash -c "grep -q 'container_name: server2' '$WORK/dc-course-r.yaml' && grep -q 'container_name: nats3' '$WORK/dc-course-r.yaml' && grep -q 'sync_interval: \"always\"' '$WORK/.nats/dc-course-r.nats3.conf'"

# ---- 5. stop in the middle of a run -----------------------------------------
echo "== 5. graceful stop with agencies mid-run"
if out_of_time; then bad "out of time before step 5"; exit 1; fi
# One bet per batch: the agencies take far longer than the stop below.
"$GEN_DATA" --agencies 5 --bets 200000 --out "$WORK/big" > /dev/null
prepare_data "$WORK/big"
sed -i 's/^  maxAmount: [0-9]* /  maxAmount: 1 /' "$WORK/config/client.yaml"
compose up -d >/dev/null 2>&1
limit=$(( $(date +%s) + 60 ))
until docker logs --tail 3 server 2>/dev/null | grep -q apuesta_recibida || [ "$(date +%s)" -ge $limit ]; do sleep 0.2; done
sleep 1
compose stop -t 10 >/dev/null 2>&1
compose logs --no-color > "$WORK/logs5.txt" 2>&1
check "all containers exited with code 0 after stop" all_exit_zero server client1 client2 client3 client4 client5
check "server logged its ordered shutdown" grep -q '^server .*action: shutdown | result: success' "$WORK/logs5.txt"
check "no draw happened (agencies were stopped mid-run)" bash -c "! grep -q 'action: sorteo' '$WORK/logs5.txt'"
stopped=$(grep -c 'action: shutdown | result: success' "$WORK/logs5.txt")
check "six shutdown lines (server + 5 agencies): $stopped" [ "$stopped" = 6 ]
compose down -v >/dev/null 2>&1
left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
check "down leaves no containers ($left)" [ "$left" = 0 ]
check "down leaves no network" bash -c "! docker network inspect $NETWORK >/dev/null 2>&1"

# ---- 6. a crash, the restart policy, and a plain down between deployments ----
echo "== 6. server crash mid-ingest (restart: on-failure), then a new deployment after a plain down"
if out_of_time; then bad "out of time before step 6"; exit 1; fi
"$GEN_DATA" --agencies 3 --bets 30000 --out "$WORK/crash" > "$WORK/crash.txt"
prepare_data "$WORK/crash"
mapfile -t EXPECTED < <(grep -o 'winners: [0-9]*' "$WORK/crash.txt" | grep -o '[0-9]*$')
sed -i 's/^  maxAmount: 1 /  maxAmount: 20 /' "$WORK/config/client.yaml"
(cd "$WORK" && "$GEN_COMPOSE" 3 --output docker-compose-dev.yaml >/dev/null 2>&1)
compose up -d >/dev/null 2>&1
limit=$(( $(date +%s) + 60 ))
until docker logs --tail 3 server 2>/dev/null | grep -q apuesta_recibida || [ "$(date +%s)" -ge $limit ]; do sleep 0.1; done
pid=$(docker inspect -f '{{.State.Pid}}' server)
kill -9 "$pid" 2>/dev/null
check "server process SIGKILLed from the host mid-ingest (pid $pid)" [ -n "$pid" -a "$pid" != 0 ]
check "the agencies finished after the crash" wait_clients 3 180
restarts=$(docker inspect -f '{{.RestartCount}}' server)
check "the restart policy restarted the server ($restarts)" [ "${restarts:-0}" -ge 1 ]
compose logs --no-color > "$WORK/logs6.txt" 2>&1
for k in 1 2 3; do
    got=$(grep "^client$k " "$WORK/logs6.txt" | grep -o 'consulta_ganadores | result: success | cant_ganadores: [0-9]*' | grep -o '[0-9]*$')
    check "client$k cant_ganadores ${got:-none} = ${EXPECTED[$((k-1))]}" [ "${got:-x}" = "${EXPECTED[$((k-1))]}" ]
done
check "every client exited with code 0" all_exit_zero client1 client2 client3
docker exec server cat bets.csv > "$WORK/stored6.csv"
check "every bet stored exactly once after the crash" python3 - "$WORK/stored6.csv" "$WORK/crash" <<'PY'
import sys, csv, collections, glob, os
stored = collections.Counter()
for row in csv.reader(open(sys.argv[1], newline='', encoding='utf-8')):
    stored[(row[0], row[3])] += 1
want = collections.Counter()
for path in glob.glob(os.path.join(sys.argv[2], 'agency-*.csv')):
    agency = os.path.basename(path)[len('agency-'):-len('.csv')]
    for row in csv.reader(open(path, newline='', encoding='utf-8')):
        want[(agency, row[2])] += 1
sys.exit(0 if stored == want else 1)
PY
compose stop -t 10 >/dev/null 2>&1
compose down >/dev/null 2>&1
# The next deployment, after a down without -v, starts from an empty store.
"$GEN_DATA" --agencies 2 --bets 500 --out "$WORK/next" > "$WORK/next.txt"
prepare_data "$WORK/next"
(cd "$WORK" && "$GEN_COMPOSE" 2 --output docker-compose-dev.yaml >/dev/null 2>&1)
compose up -d >/dev/null 2>&1
check "the next deployment's agencies finished" wait_clients 2 120
check "the next deployment stores only its own 1000 bets ($(stored_in server))" [ "$(stored_in server)" = 1000 ]
check "its agencies exited with code 0" all_exit_zero client1 client2
compose stop -t 10 >/dev/null 2>&1
compose down >/dev/null 2>&1
[ "$FAILED" = 0 ]
