#!/usr/bin/env bash
# Benchmark: outbound webhook deliveries to a loopback receiver.
#
#   source .dcs-env/env.sh && scripts/bench-webhooks.sh
#
# Builds the release `dcs-api`, creates a fresh Postgres database, starts the API with
# `--webhook-allow 127.0.0.0/8 --webhook-allow-http` and a fast loopback receiver
# (scripts/webhook-receiver.py: asyncio, keep-alive, answers 204 at once, notes the
# arrival time of every webhook-id; ~18,000 req/s keep-alive on this machine), then
# measures three ways:
#
#   A. worker alone: N deliveries (a ~1 KB snapshot.pushed body each) inserted by SQL in
#      one transaction, as the outbox rows of N status commits; the API only has to claim,
#      sign, send and record them. Figures: deliveries/s (first arrival to last arrival at
#      the receiver) and the time until all are recorded SUCCEEDED.
#   B. paced SQL commits: events committed one per transaction at a steady rate by another
#      session (as another replica's or a script's commits). On Postgres the outbox trigger
#      notifies at each commit and the worker, listening, wakes at once; its 250 ms poll
#      only catches what a lost notification missed. Figure: latency from the commit
#      (`created_at`) to the first attempt.
#   C. through the API: `sendTestWebhook` from concurrent keep-alive clients, flat out
#      (C1) and paced (C2). The mutation commits the outbox row and wakes the worker, as a
#      snapshot's PUSHED/FAILED commit does. Figures: events/s accepted, deliveries/s,
#      latency from `created_at` to the first attempt.
#
# Latency "to the first attempt" is measured twice: to the request's arrival at the
# receiver (same clock), and to `first_attempt_at` as the API records it (after the
# response came back, in the attempt's own transaction).
#
# Where the time goes: per phase, the API's CPU time per delivery (/proc/<pid>/stat), the
# database transactions per delivery (pg_stat_database.xact_commit) and the row updates
# per delivery (pg_stat_user_tables).
#
# The whole benchmark runs BENCH_RUNS times (default 3), each on a fresh database and a
# fresh API, and ends with the median of every figure over the runs beside each run's.
#
# Environment:
#   BENCH_RUNS         runs to take the medians of (default 3)
#   DCS_API_BIN        use this dcs-api instead of `cargo build --release -p api`
#   BENCH_EVENTS       events of phase A (default 5000)
#   BENCH_PACED        events of phase B (default 1000), BENCH_PACED_RATE per second (200)
#   BENCH_API_EVENTS   events of phase C1 (default 2000), BENCH_API_CLIENTS (default 8)
#   BENCH_API_PACED    events of phase C2 (default 1000), BENCH_API_RATE per second (200)
#   BENCH_KEEP         1: keep the database and the work directory
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${DATABASE_URL:-} ]]; then
    # shellcheck disable=SC1091
    source "${DCS_ENV_DIR:-$ROOT/.dcs-env}/env.sh"
fi
N=${BENCH_EVENTS:-5000}
PACED=${BENCH_PACED:-1000}
PACED_RATE=${BENCH_PACED_RATE:-200}
API_EVENTS=${BENCH_API_EVENTS:-2000}
API_CLIENTS=${BENCH_API_CLIENTS:-8}
API_PACED=${BENCH_API_PACED:-1000}
API_RATE=${BENCH_API_RATE:-200}

log() { printf '[bench-webhooks %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "met" : "MISSED" }'; }

if [[ -n ${DCS_API_BIN:-} ]]; then
    BIN=$DCS_API_BIN
else
    log "building the release dcs-api"
    (cd "$ROOT" && cargo build --release -p api --bin dcs-api)
    BIN=$ROOT/target/release/dcs-api
fi

# The runs: this script again, once per run (BENCH_FIGURES set: one run, its figures
# written there), then the medians.
if [[ -z ${BENCH_FIGURES:-} ]]; then
    RUNS=${BENCH_RUNS:-3}
    FIGURES=$(mktemp -d /tmp/bench-webhooks-runs.XXXXXX)
    trap 'rm -rf "$FIGURES"' EXIT
    for run in $(seq "$RUNS"); do
        log "run $run of $RUNS"
        DCS_API_BIN=$BIN BENCH_FIGURES=$FIGURES/$run bash "${BASH_SOURCE[0]}"
    done
    median() { # key -> "median (run1, run2, ...)"
        local values
        values=$(for run in $(seq "$RUNS"); do awk -v k="$1" '$1 == k { print $2 }' "$FIGURES/$run"; done)
        printf '%s (runs: %s)' \
            "$(sort -g <<<"$values" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')" \
            "$(paste -sd, - <<<"$values" | sed 's/,/, /g')"
    }
    only() { median "$1" | cut -d' ' -f1; }
    echo
    echo "Medians of $RUNS runs ($(nproc) cores, load average now $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
    printf '%-52s %s\n' "A  worker alone: deliveries/s" "$(median A_RATE)"
    printf '%-52s %s\n' "B  paced SQL commits: commit->arrival p50 ms" "$(median B_P50)"
    printf '%-52s %s\n' "B  paced SQL commits: commit->arrival p99 ms" "$(median B_P99)"
    printf '%-52s %s\n' "C1 sendTestWebhook flat out: accepted/s" "$(median C1_RATE)"
    printf '%-52s %s\n' "C1 sendTestWebhook flat out: deliveries/s" "$(median C1_DRATE)"
    printf '%-52s %s\n' "C2 sendTestWebhook paced: commit->arrival p50 ms" "$(median C2_P50)"
    printf '%-52s %s\n' "duplicate requests" "$(median DUPLICATES)"
    echo
    echo "Targets (medians)                              measured     verdict"
    printf '%-46s %-12s %s\n' ">= 1,000 deliveries/s (worker alone, A)" "$(only A_RATE)/s" "$(verdict "$(only A_RATE)" 1000 '>=')"
    printf '%-46s %-12s %s\n' ">= 1,000 deliveries/s (through the API, C1)" "$(only C1_DRATE)/s" "$(verdict "$(only C1_DRATE)" 1000 '>=')"
    printf '%-46s %-12s %s\n' "p50 <= 10 ms commit->first attempt (B)" "$(only B_P50) ms" "$(verdict "$(only B_P50)" 10 '<=')"
    printf '%-46s %-12s %s\n' "p50 <= 50 ms commit->first attempt (C2)" "$(only C2_P50) ms" "$(verdict "$(only C2_P50)" 50 '<=')"
    exit 0
fi

WORK=$(mktemp -d /tmp/bench-webhooks.XXXXXX)
DB=bench_webhooks_$$_$RANDOM
SERVER_URL=$DATABASE_URL
DB_URL=${SERVER_URL%/*}/$DB
API_PID=
RX_PID=
cleanup() {
    set +e
    for pid in $API_PID $RX_PID; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [[ ${BENCH_KEEP:-0} != 1 ]]; then
        psql "$SERVER_URL" -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
        rm -rf "$WORK"
    else
        log "kept database $DB and $WORK"
    fi
    return 0
}
trap cleanup EXIT

q() { psql "$DB_URL" -v ON_ERROR_STOP=1 -qAtc "$1"; }
psql "$SERVER_URL" -v ON_ERROR_STOP=1 -qAtc "CREATE DATABASE $DB" >/dev/null

# The receiver.
python3 "$ROOT/scripts/webhook-receiver.py" 0 >"$WORK/rx.port" 2>"$WORK/rx.log" &
RX_PID=$!
for _ in $(seq 100); do [[ -s $WORK/rx.port ]] && break; sleep 0.05; done
RX_PORT=$(head -1 "$WORK/rx.port")
RX=http://127.0.0.1:$RX_PORT

# The API.
API_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
API=http://127.0.0.1:$API_PORT
mkdir -p "$WORK/api"
DATABASE_URL=$DB_URL RUST_LOG=${RUST_LOG:-warn} "$BIN" --data-dir "$WORK/api" serve \
    --listen "127.0.0.1:$API_PORT" --webhook-allow 127.0.0.0/8 --webhook-allow-http \
    >"$WORK/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 300); do
    curl -fsS "$API/healthz" >/dev/null 2>&1 && break
    kill -0 "$API_PID" 2>/dev/null || { cat "$WORK/api.log"; exit 1; }
    sleep 0.1
done
TOKEN=$(env -u DATABASE_URL "$BIN" --data-dir "$WORK/api" token --sub bench --role admin)

gql() {
    curl -fsS "$API/graphql" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        --data "$1"
}
endpoint() {
    gql "{\"query\":\"mutation { createWebhookEndpoint(input: {url: \\\"$RX/$1\\\", eventTypes: [SNAPSHOT_PUSHED, SNAPSHOT_FAILED]}) { endpoint { id } } }\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["createWebhookEndpoint"]["endpoint"]["id"])'
}
EP_A=$(endpoint a)
EP_B=$(endpoint b)
EP_C1=$(endpoint c1)
EP_C2=$(endpoint c2)

# A realistic snapshot.pushed body (~1 KB), from a uuid column `u.id` and index `i`.
PAYLOAD="json_build_object('type', 'snapshot.pushed', 'version', 1,
  'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
  'data', json_build_object('snapshotId', u.id, 'parentSnapshotId', NULL, 'parentImage', NULL,
    'image', 'registry.example/workshops/bench/desktop:v' || i,
    'repository', 'registry.example/workshops/bench/desktop', 'requestedBy', 'bench',
    'node', 'node-1', 'containerId', 'desk-' || i,
    'pod', json_build_object('namespace', 'workshop', 'name', 'desktop-' || i, 'container', 'desktop'),
    'baseImage', 'registry.example/base/desktop:1', 'baseDigest', 'sha256:' || repeat('b', 64),
    'message', 'benchmark event',
    'timings', json_build_object('requestedAt', '2026-01-01T00:00:00.000Z',
       'startedAt', '2026-01-01T00:00:00.100Z', 'finishedAt', '2026-01-01T00:00:03.000Z',
       'pausedMs', 12, 'durationMs', 2900),
    'manifestDigest', 'sha256:' || encode(sha256(u.id::text::bytea), 'hex'),
    'configDigest', 'sha256:' || encode(sha256(('c' || u.id)::bytea), 'hex'),
    'layerDigest', 'sha256:' || encode(sha256(('l' || u.id)::bytea), 'hex'),
    'size', 123456789, 'uncompressedSize', 987654321))::text"
COLUMNS="id, endpoint_id, message_id, event_type, payload, status, attempts, next_attempt_at, created_at"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
xacts() { q "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
updates() { q "SELECT coalesce(sum(n_tup_upd) FILTER (WHERE relname = 'webhook_deliveries'), 0) || ' ' || coalesce(sum(n_tup_ins) FILTER (WHERE relname = 'webhook_attempts'), 0) FROM pg_stat_user_tables"; }
TICK=$(getconf CLK_TCK)
declare -A PROFILE
# Postgres flushes an idle backend's statistics only every ~10 s: wait that long
# around each phase so the counters are complete.
STATS_WAIT=${BENCH_STATS_WAIT:-11}
OWN=0 # transactions of this script's own (monitoring, inserting) during a phase
profile_start() {
    sleep "$STATS_WAIT"
    P_CPU=$(cpu_ticks "$API_PID"); P_RX=$(cpu_ticks "$RX_PID"); P_X=$(xacts); P_U=$(updates)
    OWN=1
}
profile_end() { # phase events
    local cpu rx x u
    cpu=$(cpu_ticks "$API_PID"); rx=$(cpu_ticks "$RX_PID")
    sleep "$STATS_WAIT"
    x=$(xacts); u=$(updates)
    PROFILE[$1]=$(awk -v c0="$P_CPU" -v c1="$cpu" -v r0="$P_RX" -v r1="$rx" -v x0="$P_X" -v x1="$x" \
        -v own="$OWN" -v u0="${P_U% *}" -v u1="${u% *}" -v i0="${P_U#* }" -v i1="${u#* }" -v n="$2" -v t="$TICK" \
        'BEGIN { printf "API CPU %.2f ms/delivery, receiver CPU %.2f ms/delivery, API DB transactions %.2f/delivery, outbox row updates %.2f/delivery, attempt rows %.2f/delivery", (c1-c0)*1000/t/n, (r1-r0)*1000/t/n, (x1-x0-own)/n, (u1-u0)/n, (i1-i0)/n }')
}

wait_done() { # endpoint count
    local deadline=$((SECONDS + 600))
    while :; do
        local succeeded
        succeeded=$(q "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '$1' AND status = 'SUCCEEDED'")
        OWN=$((OWN + 1))
        [[ $succeeded -ge $2 ]] && return 0
        [[ $SECONDS -lt $deadline ]] || { log "timed out: $succeeded of $2"; return 1; }
        sleep 0.2
    done
}

log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- A. worker alone -----------------------------------------------------------------
log "A: $N deliveries inserted in one transaction"
profile_start
T0=$(date +%s.%N)
q "INSERT INTO webhook_deliveries ($COLUMNS)
   SELECT u.id, '$EP_A', 'msg_' || replace(u.id::text, '-', ''), 'snapshot.pushed', $PAYLOAD,
          'PENDING', 0, clock_timestamp(), clock_timestamp()
   FROM (SELECT gen_random_uuid() AS id, i FROM generate_series(1, $N) i) u"
T1=$(date +%s.%N)
OWN=$((OWN + 1))
wait_done "$EP_A" "$N"
T2=$(date +%s.%N)
profile_end A "$N"
log "A: inserted in $(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.2f", b-a}') s, all SUCCEEDED $(awk -v a="$T1" -v b="$T2" 'BEGIN{printf "%.2f", b-a}') s after the commit"

# --- B. paced SQL commits ------------------------------------------------------------
log "B: $PACED events committed one by one at ~$PACED_RATE/s by another session"
profile_start
SLEEP=$(awk -v r="$PACED_RATE" 'BEGIN{printf "%.6f", 1/r}')
q "DO \$\$
   BEGIN
     FOR i IN 1..$PACED LOOP
       INSERT INTO webhook_deliveries ($COLUMNS)
       SELECT u.id, '$EP_B', 'msg_' || replace(u.id::text, '-', ''), 'snapshot.pushed', $PAYLOAD,
              'PENDING', 0, clock_timestamp(), clock_timestamp()
       FROM (SELECT gen_random_uuid() AS id) u;
       COMMIT;
       PERFORM pg_sleep($SLEEP);
     END LOOP;
   END \$\$"
OWN=$((OWN + PACED + 1))
wait_done "$EP_B" "$PACED"
profile_end B "$PACED"

# --- C. through the API ----------------------------------------------------------------
api_load() { # endpoint events clients rate(0 = flat out)
    python3 - "$API_PORT" "$TOKEN" "$1" "$2" "$3" "$4" <<'PY'
import http.client, json, sys, threading, time
port, token, endpoint, total, clients, rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
body = json.dumps({"query": "mutation($id: ID!) { sendTestWebhook(id: $id) { id } }", "variables": {"id": endpoint}})
headers = {"authorization": "Bearer " + token, "content-type": "application/json"}
lock = threading.Lock()
state = {"next": 0, "errors": 0}
start = time.time()
def worker():
    conn = http.client.HTTPConnection("127.0.0.1", int(port))
    while True:
        with lock:
            i = state["next"]
            if i >= total:
                return
            state["next"] += 1
        if rate > 0:
            delay = start + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        conn.request("POST", "/graphql", body, headers)
        reply = json.loads(conn.getresponse().read())
        if reply.get("errors"):
            with lock:
                state["errors"] += 1
threads = [threading.Thread(target=worker) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.time() - start
print(f"{total / elapsed:.0f} {state['errors']}")
PY
}
log "C1: $API_EVENTS sendTestWebhook from $API_CLIENTS clients, flat out"
profile_start
read -r C1_RATE C1_ERRORS < <(api_load "$EP_C1" "$API_EVENTS" "$API_CLIENTS" 0)
wait_done "$EP_C1" "$API_EVENTS"
profile_end C1 "$API_EVENTS"
log "C1: $C1_RATE events/s accepted, $C1_ERRORS errors"
log "C2: $API_PACED sendTestWebhook paced at $API_RATE/s"
profile_start
read -r C2_RATE C2_ERRORS < <(api_load "$EP_C2" "$API_PACED" 4 "$API_RATE")
wait_done "$EP_C2" "$API_PACED"
profile_end C2 "$API_PACED"
log "C2: $C2_RATE events/s accepted, $C2_ERRORS errors"

# --- figures --------------------------------------------------------------------------
curl -fsS "$RX/dump" >"$WORK/arrivals.txt"
q "CREATE TABLE bench_arrivals (message_id text, us bigint)"
psql "$DB_URL" -qc "\\copy bench_arrivals FROM '$WORK/arrivals.txt' WITH (FORMAT text, DELIMITER ' ')"
DUPLICATES=$(q "SELECT count(*) - count(DISTINCT message_id) FROM bench_arrivals")

figures() { # endpoint -> "count rate p50_rx p99_rx p50_db p99_db"
    q "WITH first AS (SELECT message_id, min(us) AS us FROM bench_arrivals GROUP BY message_id),
            d AS (SELECT f.us, (f.us - extract(epoch FROM w.created_at) * 1e6) / 1000.0 AS rx_ms,
                         extract(epoch FROM w.first_attempt_at - w.created_at) * 1000.0 AS db_ms
                  FROM webhook_deliveries w JOIN first f USING (message_id)
                  WHERE w.endpoint_id = '$1')
       SELECT count(*) || ' ' ||
              round((count(*) - 1) / greatest((max(us) - min(us)) / 1e6, 1e-6)) || ' ' ||
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY rx_ms)::numeric, 1) || ' ' ||
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY rx_ms)::numeric, 1) || ' ' ||
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY db_ms)::numeric, 1) || ' ' ||
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY db_ms)::numeric, 1)
       FROM d"
}
read -r A_N A_RATE A_P50 A_P99 A_DP50 A_DP99 < <(figures "$EP_A")
read -r B_N B_RATE B_P50 B_P99 B_DP50 B_DP99 < <(figures "$EP_B")
read -r C1_N C1_DRATE C1_P50 C1_P99 C1_DP50 C1_DP99 < <(figures "$EP_C1")
read -r C2_N C2_DRATE C2_P50 C2_P99 C2_DP50 C2_DP99 < <(figures "$EP_C2")
A_WALL=$(awk -v a="$T1" -v b="$T2" -v n="$N" 'BEGIN{printf "%.0f", n/(b-a)}')


echo
echo "Webhook delivery benchmark ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), receiver: Python asyncio on loopback)"
echo
printf '%-44s %7s %13s %21s %21s\n' "phase" "events" "deliveries/s" "commit->arrival ms" "commit->recorded ms"
printf '%-44s %7s %13s %10s %10s %10s %10s\n' "" "" "" "p50" "p99" "p50" "p99"
printf '%-44s %7s %13s %10s %10s %10s %10s\n' "A  worker alone (bulk outbox, 1 txn)" "$A_N" "$A_RATE" "$A_P50" "$A_P99" "$A_DP50" "$A_DP99"
printf '%-44s %7s %13s %10s %10s %10s %10s\n' "B  paced SQL commits, ${PACED_RATE}/s (NOTIFY)" "$B_N" "$B_RATE" "$B_P50" "$B_P99" "$B_DP50" "$B_DP99"
printf '%-44s %7s %13s %10s %10s %10s %10s\n' "C1 sendTestWebhook flat out ($C1_RATE/s accepted)" "$C1_N" "$C1_DRATE" "$C1_P50" "$C1_P99" "$C1_DP50" "$C1_DP99"
printf '%-44s %7s %13s %10s %10s %10s %10s\n' "C2 sendTestWebhook paced ($C2_RATE/s)" "$C2_N" "$C2_DRATE" "$C2_P50" "$C2_P99" "$C2_DP50" "$C2_DP99"
echo
echo "A: commit to all $N recorded SUCCEEDED: $A_WALL deliveries/s. Duplicate requests: $DUPLICATES."
echo "(A's latencies are backlog: $N events committed at once wait their turn.)"
echo
echo "Targets                                        measured                      verdict"
printf '%-46s %-29s %s\n' ">= 1,000 deliveries/s (worker alone, A)" "$A_RATE/s" "$(verdict "$A_RATE" 1000 '>=')"
printf '%-46s %-29s %s\n' ">= 1,000 deliveries/s (through the API, C1)" "$C1_DRATE/s" "$(verdict "$C1_DRATE" 1000 '>=')"
printf '%-46s %-29s %s\n' "p50 <= 50 ms commit->first attempt (C2)" "$C2_P50 ms (p99 $C2_P99 ms)" "$(verdict "$C2_P50" 50 '<=')"
printf '%-46s %-29s %s\n' "p50 <= 10 ms commit->first attempt (B)" "$B_P50 ms (p99 $B_P99 ms)" "$(verdict "$B_P50" 10 '<=')"
echo
echo "Where the time goes:"
for phase in A B C1 C2; do
    echo "  $phase: ${PROFILE[$phase]}"
done
for key in A_RATE A_WALL B_P50 B_P99 C1_RATE C1_DRATE C1_P50 C2_P50 C2_P99 DUPLICATES; do
    echo "$key ${!key}"
done >"$BENCH_FIGURES"
