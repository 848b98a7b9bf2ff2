#!/usr/bin/env python3
"""The course's procedure, as its graders run it, against the real Docker engine.

Case after case, in one sequence and without `-v` between cases: write
`config/*.yaml` and `.data/agency-K.csv`, run `bash generar-compose.sh
docker-compose-dev.yaml N`, `COMPOSE -f docker-compose-dev.yaml up -d`, read every
container's log, parse each line by the course's rules, check
`docker exec server sh -c "wc -l bets.csv"`, then `stop` and `down`.

The course's parser: the text before the first `|` is the source (the container,
as `compose logs` prints it); the rest is split on every `|`, escaped or not;
`result` must be `success`, `fail` or `in_progress`; every other field must be
`key: value`. It adds up `cantidad` over the `apuesta_recibida` success lines and
checks, in log order, that only an agency's last batch may be short.

Usage: COMPOSE="docker compose" python3 scripts/course-procedure.py
Works in a temporary copy of the deployment; touches only the compose project
`tp0` (its containers and the tp0_testing_net network). Exit 0 when every check
passes. Bounded: each case waits at most CASE_TIMEOUT seconds.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = shlex.split(os.environ.get("COMPOSE", "docker compose"))
CASE_TIMEOUT = 120
WINNING_NUMBER = 7574
RESULTS = {"success", "fail", "in_progress"}

passed = 0
failed = 0


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok: {what}")
    else:
        failed += 1
        print(f"  FAIL: {what}{': ' + detail if detail else ''}")
    return ok


def run(cmd, cwd, timeout=120, check_rc=True):
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check_rc and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()[-2000:]}")
    return res


def agency_rows(agency, count, winners):
    """`count` rows of one agency, `winners` of them with the winning number."""
    rows = []
    for i in range(count):
        number = WINNING_NUMBER if i < winners else (i * 7 + agency) % 7000
        rows.append(f"Name{agency},Surname{i},{agency * 10_000_000 + i:08d},2000-01-01,{number}")
    return rows


def parse_line(line):
    """Splits one `compose logs` line the course's way; returns (source, fields) or an error."""
    if "|" not in line:
        return None, None, "no '|' separator"
    source, rest = line.split("|", 1)
    fields = [f.strip() for f in rest.split("|")]
    head = fields[0]
    if "action:" not in head:
        return source.strip(), None, "no action"
    parsed = {"action": head.split("action:", 1)[1].strip()}
    for field in fields[1:]:
        if ":" not in field:
            return source.strip(), None, f"field {field!r} is not 'key: value'"
        key, value = field.split(":", 1)
        parsed[key.strip()] = value.strip()
    if parsed.get("result") not in RESULTS:
        return source.strip(), None, f"result {parsed.get('result')!r} is not one of {sorted(RESULTS)}"
    return source.strip(), parsed, None


def wait_clients(n):
    deadline = time.time() + CASE_TIMEOUT
    while time.time() < deadline:
        states = []
        for k in range(1, n + 1):
            res = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", f"client{k}"],
                                 capture_output=True, text=True)
            states.append(res.stdout.strip())
        if all(s == "exited" for s in states):
            return True
        time.sleep(0.5)
    return False


def run_case(work, name, agencies, max_amount, expected_batches=None):
    """agencies: list of (rows, winners) per agency K = 1..N."""
    print(f"== {name}")
    n = len(agencies)
    compose = COMPOSE + ["-f", "docker-compose-dev.yaml"]
    # The graders write the config and the data, then generate the compose file.
    with open(os.path.join(ROOT, "config", "server.yaml")) as f:
        server_yaml = f.read().replace("level: INFO ", "level: DEBUG ")
    with open(os.path.join(ROOT, "config", "client.yaml")) as f:
        client_yaml = re.sub(r"maxAmount: [0-9]+ ", f"maxAmount: {max_amount} ", f.read())
    with open(os.path.join(work, "config", "server.yaml"), "w") as f:
        f.write(server_yaml)
    with open(os.path.join(work, "config", "client.yaml"), "w") as f:
        f.write(client_yaml)
    data = os.path.join(work, ".data")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    total = 0
    for k, (count, winners) in enumerate(agencies, start=1):
        with open(os.path.join(data, f"agency-{k}.csv"), "w") as f:
            f.write("\n".join(agency_rows(k, count, winners)) + "\n")
        total += count
    run(["bash", "generar-compose.sh", "docker-compose-dev.yaml", str(n)], cwd=work)
    run(compose + ["up", "-d"], cwd=work)
    try:
        check(f"{n} agencies finished within {CASE_TIMEOUT} s", wait_clients(n))
        logs = run(compose + ["logs", "--no-color"], cwd=work).stdout.splitlines()
        bad = []
        cantidad = 0
        batches = []
        winners = {}
        exits = {}
        for line in logs:
            if line.startswith("Attaching to "):
                continue  # Compose 1.29's own header, not a container's line
            source, fields, error = parse_line(line)
            if error:
                bad.append(f"{line!r}: {error}")
                continue
            if fields["result"] == "fail":
                bad.append(f"{line!r}: result fail")
            if source == "server" and fields["action"] == "apuesta_recibida":
                if "cantidad" not in fields:
                    bad.append(f"{line!r}: apuesta_recibida without cantidad")
                elif fields["result"] == "success":
                    cantidad += int(fields["cantidad"])
                    batches.append(int(fields["cantidad"]))
            if fields["action"] == "consulta_ganadores" and fields["result"] == "success":
                winners[source] = int(fields["cant_ganadores"])
            if fields["action"] == "exit":
                exits[source] = fields["result"]
        check(f"every one of {len(logs)} log lines parses, none fails", not bad, "; ".join(bad[:5]))
        check(f"cantidad adds up to the {total} bets sent ({cantidad})", cantidad == total)
        if expected_batches is not None:
            check(f"batches in log order {expected_batches}", batches == expected_batches, str(batches))
        else:
            short = [b for b in batches if b != max_amount]
            check("batches of maxAmount but the last of each agency", len(short) <= n, str(batches))
        for k, (_, expected) in enumerate(agencies, start=1):
            got = winners.get(f"client{k}")
            check(f"client{k} cant_ganadores {got} = {expected}", got == expected)
            check(f"client{k} exit success", exits.get(f"client{k}") == "success")
        check("the server runs at DEBUG, as configured",
              any("action: config | result: success" in l and "logging_level: DEBUG" in l for l in logs))
        stored_lines = sum(1 for l in logs if l.startswith("server ") and "action: apuesta_almacenada | result: success" in l)
        check(f"one DEBUG apuesta_almacenada line per bet ({stored_lines})", stored_lines == total)
        draws = sum(1 for line in logs if "action: sorteo | result: success" in line)
        check(f"exactly one sorteo ({draws})", draws == 1)
        check("the server speaks TLS 1.3 with the deployment's certificate",
              any(l.startswith("server ") and "action: tls | result: success | mode: TLS 1.3" in l for l in logs))
        check("no agency connected in plain TCP", not any("action: plain_connection" in l for l in logs))
        tls_ca = [l for l in logs if "action: config | result: success" in l and "tls_ca: /tls/ca.pem" in l]
        check(f"every agency trusts the deployment CA at /tls/ca.pem ({len(tls_ca)})", len(tls_ca) == n)
        wc = run(["docker", "exec", "server", "sh", "-c", "wc -l bets.csv"], cwd=work, check_rc=False)
        check(f"docker exec server sh -c \"wc -l bets.csv\" -> {wc.stdout.strip()!r}",
              wc.returncode == 0 and wc.stdout.split()[:2] == [str(total), "bets.csv"], wc.stderr.strip())
        cat = run(["docker", "exec", "server", "cat", "/config/server.yaml"], cwd=work, check_rc=False)
        check("docker exec server cat /config/server.yaml shows the mounted file", cat.stdout == server_yaml)
    finally:
        run(compose + ["stop"], cwd=work, check_rc=False)
        run(compose + ["down"], cwd=work, check_rc=False)


def main():
    base = tempfile.mkdtemp(prefix="loteria-course.")
    work = os.path.join(base, "tp0")  # the project name the graders' directory would give
    os.makedirs(os.path.join(work, "config"))
    for name in ["generar-compose.sh", "docker-compose.tmpl.yaml"]:
        shutil.copy(os.path.join(ROOT, name), work)
    os.makedirs(os.path.join(work, "target", "release"))
    shutil.copy(os.path.join(ROOT, "target", "release", "gen_compose"), os.path.join(work, "target", "release"))
    # generar-compose.sh prefers a built gen_compose newer than its source.
    shutil.copy(os.path.join(ROOT, "gen_compose.rs"), work)
    later = time.time() + 1
    os.utime(os.path.join(work, "target", "release", "gen_compose"), (later, later))
    print(f"== course procedure with '{' '.join(COMPOSE)}' in {work}")
    try:
        run_case(work, "1 agency x 64 bets, batches of 10", [(64, 1)], 10, [10] * 6 + [4])
        run_case(work, "1 agency x 99 bets (after a plain down)", [(99, 0)], 10, [10] * 9 + [9])
        run_case(work, "3 agencies x 100 bets", [(100, 2), (100, 1), (100, 0)], 10)
        run_case(work, "5 agencies x 60 bets", [(60, w) for w in range(1, 6)], 10)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        check("the procedure ran", False, str(e))
    finally:
        subprocess.run(["docker", "rm", "-f"] + [f"client{k}" for k in range(1, 6)] + ["server"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    print(f"course-procedure: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
