# Shared by the Docker test scripts (sourced, not run): the Compose flavour, the
# check counters and the waits. The sourcing script sets PROJECT and WORK first.

# COMPOSE="docker compose" or COMPOSE=docker-compose; v2 when present otherwise.
if [ -n "${COMPOSE:-}" ]; then
    read -r -a COMPOSE_CMD <<< "$COMPOSE"
else
    COMPOSE_CMD=(docker-compose)
    docker compose version >/dev/null 2>&1 && COMPOSE_CMD=(docker compose)
fi
PASSED=0
FAILED=0

compose() { (cd "$WORK" && timeout 120 "${COMPOSE_CMD[@]}" -p "$PROJECT" -f docker-compose-dev.yaml "$@"); }

ok()   { echo "  ok: $*"; PASSED=$((PASSED + 1)); }
bad()  { echo "  FAIL: $*"; FAILED=$((FAILED + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

# Waits until every clientK (1..N) has exited; bounded (default 180 s).
wait_clients() {
    local n=$1 limit=$(( $(date +%s) + ${2:-180} ))
    while [ "$(date +%s)" -lt "$limit" ]; do
        local running=0
        for k in $(seq 1 "$n"); do
            [ "$(docker inspect -f '{{.State.Status}}' "client$k" 2>/dev/null)" = exited ] || running=1
        done
        [ $running = 0 ] && return 0
        sleep 0.5
    done
    return 1
}
exit_code() { docker inspect -f '{{.State.ExitCode}}' "$1" 2>/dev/null; }
all_exit_zero() {
    local c
    for c in "$@"; do [ "$(exit_code "$c")" = 0 ] || { echo "    $c exit code: $(exit_code "$c")"; return 1; }; done
}
# $1: a folder of agency-K.csv files, copied as the deployment's .data.
prepare_data() { rm -rf "$WORK/.data" && mkdir -p "$WORK/.data" && cp "$1"/agency-*.csv "$WORK/.data/"; }
# Rows in the store of container $1 (through its shell, as the course checks by hand).
stored_in() { docker exec "$1" sh -c "wc -l < bets.csv" 2>/dev/null | tr -d ' '; }
