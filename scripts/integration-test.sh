#!/usr/bin/env bash
# The repeated run: `make docker-compose-up`, wait for the agencies, check each
# agency's winners and the stored count, `make docker-compose-down`; R times.
#   usage: scripts/integration-test.sh [R]   (R defaults to 1; CLIENTS as in make)
# Expected winners come from the agency files themselves (rows whose number is
# the winning number), so the check holds for the course's data and generated data.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${1:-1}
CLIENTS=${CLIENTS:-5}
WINNING=${WINNING_NUMBER:-7574}
TIMEOUT=${RUN_TIMEOUT:-180}
case "$RUNS" in ''|*[!0-9]*) echo "usage: $0 [R]   (R: a whole number of runs)" >&2; exit 2 ;; esac

passed=0
failed=0
for run in $(seq 1 "$RUNS"); do
    errors=()
    if ! make --no-print-directory docker-compose-up CLIENTS="$CLIENTS" >/tmp/integration-up.$$ 2>&1; then
        tail -20 /tmp/integration-up.$$
        errors+=("make docker-compose-up failed")
    else
        deadline=$(( $(date +%s) + TIMEOUT ))
        while :; do
            running=0
            for k in $(seq 1 "$CLIENTS"); do
                [ "$(docker inspect -f '{{.State.Status}}' "client$k" 2>/dev/null)" = exited ] || running=1
            done
            [ $running = 0 ] && break
            [ "$(date +%s)" -ge $deadline ] && { errors+=("agencies still running after ${TIMEOUT}s"); break; }
            sleep 0.5
        done
        total=0
        for k in $(seq 1 "$CLIENTS"); do
            file=.data/agency-$k.csv
            rows=$(wc -l < "$file")
            total=$((total + rows))
            want=$(awk -F, -v w="$WINNING" '{ sub(/\r$/, ""); if ($NF == w) n++ } END { print n + 0 }' "$file")
            got=$(docker logs "client$k" 2>&1 | grep -o 'action: consulta_ganadores | result: success | cant_ganadores: [0-9]*' | grep -o '[0-9]*$')
            [ "${got:-none}" = "$want" ] || errors+=("client$k cant_ganadores ${got:-none}, expected $want")
            code=$(docker inspect -f '{{.State.ExitCode}}' "client$k" 2>/dev/null)
            [ "$code" = 0 ] || errors+=("client$k exit code ${code:-none}")
        done
        stored=$(docker exec server sh -c "wc -l < bets.csv" 2>&1 | tr -d ' ')
        [ "$stored" = "$total" ] || errors+=("server stores $stored rows, the agency files hold $total")
        draws=$(docker logs server 2>&1 | grep -c 'action: sorteo | result: success')
        [ "$draws" = 1 ] || errors+=("$draws sorteo lines, expected 1")
    fi
    make --no-print-directory docker-compose-down >/tmp/integration-down.$$ 2>&1 || errors+=("make docker-compose-down failed")
    if [ ${#errors[@]} = 0 ]; then
        passed=$((passed + 1))
        echo "integration-test: run $run/$RUNS ok ($CLIENTS agencies, $total bets)"
    else
        failed=$((failed + 1))
        printf 'integration-test: run %s/%s FAIL: %s\n' "$run" "$RUNS" "$(IFS=';'; echo "${errors[*]}")"
    fi
done
rm -f /tmp/integration-up.$$ /tmp/integration-down.$$
echo "integration-test: $passed of $RUNS runs passed"
[ "$failed" = 0 ]
