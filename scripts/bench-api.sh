#!/usr/bin/env bash
# Benchmark: the GraphQL API under load, side by side with Postgres running the same SQL.
#
#   scripts/bench-api.sh            # full run (about 8 minutes on 2 cores, after the builds)
#   scripts/bench-api.sh --quick    # a few seconds per case, 10,000 rows (about 2 minutes)
#
# Installs what is missing (Debian's wrk, and postgresql-15 for pgbench), builds the
# release `dcs-api` and the helpers in scripts/bench-api/helper, starts a private PostgreSQL 15 (initdb in a
# temporary directory, 127.0.0.1 on a free port, max_connections 400 so that pgbench can
# open 200 clients, pg_stat_statements loaded; the shared dev-env cluster allows only 100
# connections and carries other people's tests), fills it with 100,000 snapshots (most
# built on an earlier one of the same speaker) and a 200-generation lineage, runs ANALYZE,
# and starts `dcs-api` on it with a fake agent (scripts/bench-api/helper `agent`: registers,
# reports 1,000 desktops, accepts jobs and reports DIFFING, PUSHING and PUSHED for each).
#
# Throughout, a writer creates snapshots through the API (BENCH_WRITE_RATE per second,
# each one dispatched to the fake agent and finished by it: 4 row writes and 4 events per
# snapshot), so the reads see a moving table.
#
# Cases (closed loop with wrk at 1, 10, 50 and 200 connections, BENCH_SECONDS each):
#   snapshots   `snapshots(first: 20)` with each node's `parent { id }`, as an admin
#   ancestors   `snapshot(id) { ancestors(first: 200) { id } }` on the 200th generation
#   containers  `containers(first: 50)`, as a speaker who owns 10 of the 1,000 desktops
# Each next to pgbench (-M prepared, the same number of clients, 2 threads) running the
# statements the API runs for one request (as Postgres' statement log shows them; see
# scripts/bench-api/*.sql), one pgbench transaction per API request: "ratio" is API req/s
# over pgbench req/s.
#   open loop   `snapshots` at half the best closed-loop rate over 200 connections (the
#               helper's `load`: request i is due at i/rate and its latency counts from
#               then, so waiting for a connection counts; Debian has neither vegeta nor
#               wrk2, and oha does not build without its TLS features), and pgbench -R
#   create      `createSnapshot` bursts: 200 concurrent calls, 5 times (1,000 snapshots)
#   subscribe   500 WebSocket subscriptions (`snapshotEvents`, graphql-transport-ws) while
#               snapshots are created at BENCH_SUB_RATE per second; delivery latency is
#               from the event's `at` (the API's clock when it wrote the change) to its
#               arrival; every subscription must receive every event.
#
# Ends with one table (case, clients, req/s, p50, p99, pgbench req/s, ratio) and the
# targets of issue 9 with PASS/FAIL; BENCH_STRICT=1 makes a miss exit 1. The load average
# is printed at the start and at the end: the machine is shared.
#
# Environment:
#   DCS_API_BIN        use this dcs-api instead of `cargo build --release -p api`
#   BENCH_ROWS         snapshots in the table (default 100000; --quick 10000)
#   BENCH_SECONDS      seconds per closed-loop run (default 15; --quick 3)
#   BENCH_CLIENTS      client counts (default "1 10 50 200")
#   BENCH_WRITE_RATE   background snapshots per second (default 5)
#   BENCH_SUBSCRIBERS  subscriptions (default 500), BENCH_SUB_RATE snapshots/s while they
#                      listen (default 10), BENCH_SUB_SECONDS (default 20; --quick 5)
#   BENCH_BURSTS       createSnapshot bursts of 200 (default 5; --quick 2)
#   BENCH_KEEP         1: keep the work directory (logs, pgbench scripts, raw outputs)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/scripts/bench-api
QUICK=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown argument $arg" >&2
        exit 2
        ;;
    esac
done
if [[ $QUICK == 1 ]]; then
    ROWS=${BENCH_ROWS:-10000}
    DURATION=${BENCH_SECONDS:-3}
    SUB_SECONDS=${BENCH_SUB_SECONDS:-5}
    BURSTS=${BENCH_BURSTS:-2}
else
    ROWS=${BENCH_ROWS:-100000}
    DURATION=${BENCH_SECONDS:-15}
    SUB_SECONDS=${BENCH_SUB_SECONDS:-20}
    BURSTS=${BENCH_BURSTS:-5}
fi
CLIENTS=${BENCH_CLIENTS:-1 10 50 200}
WRITE_RATE=${BENCH_WRITE_RATE:-5}
SUBSCRIBERS=${BENCH_SUBSCRIBERS:-500}
SUB_RATE=${BENCH_SUB_RATE:-10}
BURST=200
GENERATIONS=200
STARTED=$SECONDS

log() { printf '[bench-api %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "$*"
    exit 1
}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average: $LOAD_START ($(nproc) cores)"

# --- tools ---------------------------------------------------------------------------
PG_BIN=/usr/lib/postgresql/15/bin
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[[ -x $PG_BIN/pgbench && -x $PG_BIN/initdb ]] || missing+=(postgresql-15)
command -v psql >/dev/null || missing+=(postgresql-client-15)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# --- builds --------------------------------------------------------------------------
if [[ -n ${DCS_API_BIN:-} ]]; then
    BIN=$DCS_API_BIN
else
    log "building the release dcs-api"
    (cd "$ROOT" && cargo build --quiet --release -p api --bin dcs-api)
    BIN=$ROOT/target/release/dcs-api
fi
log "building the benchmark helpers"
(cd "$HERE/helper" && CARGO_TARGET_DIR=$ROOT/target/bench-api-helper cargo build --quiet --release)
HELPER=$ROOT/target/bench-api-helper/release/bench-api-helper

# --- processes and clean-up ----------------------------------------------------------
WORK=$(mktemp -d /tmp/bench-api.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PG_STARTED=0
pg_ctl_as() { # pg_ctl as the owner of the data directory (Postgres refuses root)
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" "$@"
    else
        "$PG_BIN/pg_ctl" "$@"
    fi
}
cleanup() {
    set +e
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [[ $PG_STARTED == 1 ]]; then
        pg_ctl_as -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1
    fi
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- PostgreSQL ------------------------------------------------------------------------
PG_PORT=$(free_port)
mkdir -p "$WORK/pg"
[[ $(id -u) == 0 ]] && chown postgres: "$WORK/pg"
log "starting a private PostgreSQL 15 on 127.0.0.1:$PG_PORT"
if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U postgres >"$WORK/initdb.log" 2>&1 ||
        die "initdb failed: $(tail -5 "$WORK/initdb.log")"
else
    "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U postgres >"$WORK/initdb.log" 2>&1 ||
        die "initdb failed: $(tail -5 "$WORK/initdb.log")"
fi
pg_ctl_as -D "$WORK/pg/data" -l "$WORK/pg/log" -w -t 60 start -o \
    "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_preload_libraries=pg_stat_statements -c log_checkpoints=on -c log_autovacuum_min_duration=0 -c log_min_duration_statement=100" \
    >/dev/null || die "PostgreSQL did not start: $(tail -5 "$WORK/pg/log")"
PG_STARTED=1
SERVER_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
DB_URL=postgres://postgres@127.0.0.1:$PG_PORT/bench
psql "$SERVER_URL" -v ON_ERROR_STOP=1 -qAtc "CREATE DATABASE bench" >/dev/null
q() { psql "$DB_URL" -v ON_ERROR_STOP=1 -qAtc "$1"; }

# --- the API, the data, the agent, the writer -----------------------------------------------
API_PORT=$(free_port)
API=http://127.0.0.1:$API_PORT
mkdir -p "$WORK/api"
DATABASE_URL=$DB_URL RUST_LOG=${RUST_LOG:-warn} "$BIN" --data-dir "$WORK/api" serve \
    --listen "127.0.0.1:$API_PORT" --agent-timeout-seconds 60 >"$WORK/api.log" 2>&1 &
API_PID=$!
PIDS+=("$API_PID")
for _ in $(seq 300); do
    curl -fsS "$API/healthz" >/dev/null 2>&1 && break
    kill -0 "$API_PID" 2>/dev/null || die "dcs-api exited: $(tail -20 "$WORK/api.log")"
    sleep 0.1
done
curl -fsS "$API/healthz" >/dev/null || die "dcs-api did not answer /healthz"
ADMIN=$(env -u DATABASE_URL "$BIN" --data-dir "$WORK/api" token --sub bench-admin --role admin)
ALICE=$(env -u DATABASE_URL "$BIN" --data-dir "$WORK/api" token --sub alice --role speaker --namespaces workshop)

log "filling: $ROWS snapshots and a $GENERATIONS-generation lineage, then ANALYZE"
psql "$DB_URL" -qX -v ON_ERROR_STOP=1 -v rows="$((ROWS - GENERATIONS))" -v generations="$GENERATIONS" \
    -f "$HERE/fill.sql" >/dev/null
q "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
LEAF=$(q "SELECT md5('chain' || $GENERATIONS)::uuid")

# The desktops run images of recent snapshots: new snapshots get a parent.
q "SELECT manifest_digest FROM snapshots WHERE status = 'PUSHED' ORDER BY created_at DESC LIMIT 1000" >"$WORK/digests"
"$HELPER" agent --api "$API" --secret-file "$WORK/api/agent-secret" --node bench-node \
    --containers 1000 --digests "$WORK/digests" --step-ms 20 >"$WORK/agent.out" 2>"$WORK/agent.log" &
PIDS+=("$!")
AGENT_PID=$!
for _ in $(seq 300); do
    [[ -s $WORK/agent.out ]] && break
    kill -0 "$AGENT_PID" 2>/dev/null || die "the fake agent exited: $(cat "$WORK/agent.log")"
    sleep 0.1
done
[[ -s $WORK/agent.out ]] || die "the fake agent did not register"

# Background writes: containers c-0000..c-0099.
"$HELPER" create --api "$API" --token "$ADMIN" --first-container 0 --containers 100 \
    --rate "$WRITE_RATE" --threads 1 >"$WORK/writer.out" 2>"$WORK/writer.log" &
WRITER_PID=$!
PIDS+=("$WRITER_PID")

# --- request bodies, checked once ---------------------------------------------------------
cat >"$WORK/snapshots.json" <<'EOF'
{"query":"{ snapshots(first: 20) { edges { cursor node { id status target createdAt parent { id } } } pageInfo { hasNextPage endCursor } } }"}
EOF
# shellcheck disable=SC2016 # GraphQL variables, not shell ones
printf '{"query":"query($id: ID!) { snapshot(id: $id) { id ancestors(first: %d) { id } } }","variables":{"id":"%s"}}\n' \
    "$GENERATIONS" "$LEAF" >"$WORK/ancestors.json"
cat >"$WORK/containers.json" <<'EOF'
{"query":"{ containers(first: 50) { edges { cursor node { id node podNamespace podName containerName state image imageDigest owner } } pageInfo { hasNextPage endCursor } } }"}
EOF
declare -A TOKEN=([snapshots]=$ADMIN [ancestors]=$ADMIN [containers]=$ALICE)
sleep 2 # a few background snapshots exist, with their parents
for case in snapshots ancestors containers; do
    curl -fsS "$API/graphql" -H "authorization: Bearer ${TOKEN[$case]}" -H 'content-type: application/json' \
        --data-binary "@$WORK/$case.json" >"$WORK/$case.answer"
    jq -e '.errors == null' "$WORK/$case.answer" >/dev/null || die "$case: $(head -c 500 "$WORK/$case.answer")"
done
jq -e '[.data.snapshots.edges[].node.parent | select(. != null)] | length > 10' "$WORK/snapshots.answer" >/dev/null ||
    die "the first page has too few parents: $(head -c 500 "$WORK/snapshots.answer")"
jq -e ".data.snapshot.ancestors | length == $((GENERATIONS - 1))" "$WORK/ancestors.answer" >/dev/null ||
    die "the lineage is not $GENERATIONS generations long"
jq -e '.data.containers.edges | length == 10' "$WORK/containers.answer" >/dev/null || die "alice should see 10 desktops"

# --- the same SQL for pgbench ---------------------------------------------------------------
# Written as Postgres' statement log shows the API's statements (sqlx prepares each one).
COLS=$(q "SELECT string_agg(format('\"snapshots\".%I', attname), ', ' ORDER BY attnum) FROM pg_attribute
          WHERE attrelid = 'snapshots'::regclass AND attnum > 0 AND NOT attisdropped")
# The page asks for `id status target createdAt parent { id }`: the API reads those
# columns and the visibility rule's (api/src/service/snapshot_rows.rs), in table order.
PAGE_COLS=$(q "SELECT string_agg(format('\"snapshots\".%I', attname), ', ' ORDER BY attnum) FROM pg_attribute
               WHERE attrelid = 'snapshots'::regclass AND attnum > 0 AND NOT attisdropped
               AND attname IN ('id', 'requested_by', 'pod_namespace', 'parent_id', 'target', 'status',
                               'created_at', 'owner')")
CCOLS=$(q "SELECT string_agg(format('\"containers\".%I', attname), ', ' ORDER BY attnum) FROM pg_attribute
           WHERE attrelid = 'containers'::regclass AND attnum > 0 AND NOT attisdropped")
placeholders() { # prefix count
    local i out=()
    for ((i = 1; i <= $2; i++)); do out+=(":$1$i"); done
    local IFS=, joined
    joined="${out[*]}"
    echo "${joined//,/, }"
}
pgbench_snapshots_script() { # writes $WORK/snapshots.sql and the -D arguments to $WORK/snapshots.vars
    # The current first page and its parents, as the API reads them: each parent once
    # (its id and the columns of the visibility rule only: the query asks for `parent { id }`),
    # and none that is on the page itself (the API has those); no children (the query
    # does not ask for them).
    q "SELECT id, coalesce(parent_id::text, '') FROM snapshots ORDER BY created_at DESC, id DESC LIMIT 20" >"$WORK/page"
    local parents
    mapfile -t parents < <(cut -d'|' -f2 "$WORK/page" | grep -v '^$' | sort -u | grep -vxFf <(cut -d'|' -f1 "$WORK/page") || true)
    {
        echo "\\set limit 21"
        echo "SELECT $PAGE_COLS FROM \"snapshots\" WHERE TRUE ORDER BY \"snapshots\".\"created_at\" DESC, \"snapshots\".\"id\" DESC LIMIT :limit;"
        if ((${#parents[@]} > 0)); then
            echo "SELECT \"snapshots\".\"id\", \"snapshots\".\"requested_by\", \"snapshots\".\"owner\", \"snapshots\".\"pod_namespace\" FROM \"snapshots\" WHERE \"snapshots\".\"id\" IN ($(placeholders p "${#parents[@]}"));"
        fi
    } >"$WORK/snapshots.sql"
    local i
    : >"$WORK/snapshots.vars"
    for i in "${!parents[@]}"; do echo "-Dp$((i + 1))=${parents[$i]}" >>"$WORK/snapshots.vars"; done
}
{
    echo "\\set one 1"
    echo "\\set depth $GENERATIONS"
    echo "SELECT $COLS FROM \"snapshots\" WHERE \"snapshots\".\"id\" = :leaf LIMIT :one;"
    echo "WITH RECURSIVE lineage(root, id, depth) AS (SELECT s.id, s.parent_id, CAST(1 AS BIGINT) FROM snapshots s WHERE s.id IN (:leaf) AND s.parent_id IS NOT NULL UNION ALL SELECT l.root, s.parent_id, l.depth + 1 FROM lineage l JOIN snapshots s ON s.id = l.id WHERE l.depth < :depth AND s.parent_id IS NOT NULL) SELECT l.root AS lineage_root, l.depth AS lineage_depth, s.* FROM lineage l JOIN snapshots s ON s.id = l.id ORDER BY l.root, l.depth;"
} >"$WORK/ancestors.sql"
echo "-Dleaf=$LEAF" >"$WORK/ancestors.vars"
echo "SELECT $CCOLS FROM \"containers\" WHERE \"containers\".\"pod_namespace\" IN (:ns) AND \"containers\".\"owner\" = :owner ORDER BY \"containers\".\"node\" ASC, \"containers\".\"id\" ASC LIMIT :limit;" >"$WORK/containers.sql"
# A page asks for one row more than `first`: 51.
printf '%s\n' "-Dns=workshop" "-Downer=alice" "-Dlimit=51" >"$WORK/containers.vars"

# --- runners -----------------------------------------------------------------------------
# Results: "case|clients" -> "req/s p50 p99"; pgbench the same.
declare -A API_R PGB_R NOTE PG_NOTE CPU
# The API's CPU time per request (user + system, /proc/<pid>/stat): on a shared machine
# throughput follows the neighbours' load, the cost of a request much less so.
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$API_PID/stat"; }
cpu_start() { CPU0=$(cpu_ticks); }
cpu_per() { # key count
    CPU[$1]=$(awk -v a="$CPU0" -v b="$(cpu_ticks)" -v n="$2" -v t="$TICK" 'BEGIN { printf "%.2f", (n > 0) ? (b - a) * 1000 / t / n : 0 }')
}
run_wrk() { # case clients seconds -> RESULT="rps p50 p99"
    local threads=$(($2 < 2 ? $2 : 2)) line _ n us p50 p99 sock status gql
    cpu_start
    line=$(BENCH_BODY_FILE=$WORK/$1.json BENCH_TOKEN=${TOKEN[$1]} \
        wrk -t "$threads" -c "$2" -d "${3}s" --timeout 10s -s "$HERE/graphql.lua" "$API/graphql" |
        tee -a "$WORK/wrk.log" | grep '^WRK ') || die "wrk gave no result for $1 at $2"
    # WRK requests duration_us p50 p99 socket non2xx gql
    read -r _ n us p50 p99 sock status gql <<<"$line"
    cpu_per "$1|$2" "$n"
    if ((sock + status + gql > 0)); then
        NOTE[$1|$2]="errors: $sock socket, $status non-2xx, $gql GraphQL"
    fi
    RESULT=$(awk -v n="$n" -v us="$us" -v a="$p50" -v b="$p99" 'BEGIN { printf "%.0f %.2f %.2f\n", n / (us / 1e6), a, b }')
}
run_pgbench() { # case clients seconds [rate] -> RESULT="rps p50 p99"
    local threads=$(($2 < 2 ? $2 : 2)) prefix=$WORK/pgb-$1-$2${4:+-open} key=$1\|$2${4:+\|open} vars rate=() n tps failed
    [[ -n ${4:-} ]] && rate=(-R "$4")
    mapfile -t vars <"$WORK/$1.vars"
    rm -f "$prefix".*
    "$PG_BIN/pgbench" -n -M prepared -c "$2" -j "$threads" -T "$3" "${rate[@]}" -f "$WORK/$1.sql" "${vars[@]}" \
        -l --log-prefix="$prefix" "$DB_URL" >"$prefix.out" 2>&1 || die "pgbench $1 $2: $(tail -5 "$prefix.out")"
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$prefix.out")
    if [[ ${failed:-0} != 0 ]]; then
        PG_NOTE[$key]="pgbench: $failed failed transactions"
    fi
    # Per-transaction log: client tx latency_us script_no time_s time_us [schedule_lag_us].
    # With -R, the latency includes the schedule lag (time waiting to start).
    cat "$prefix".[0-9]* | awk '{ print $3 / 1000 }' | sort -n >"$prefix.lat"
    n=$(wc -l <"$prefix.lat")
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$prefix.out")
    RESULT=$(awk -v n="$n" -v tps="$tps" 'NR == int(n * 0.5 + 0.999) { a = $1 } NR == int(n * 0.99 + 0.999) { b = $1 }
        END { printf "%.0f %.2f %.2f\n", tps, a, b }' "$prefix.lat")
}

ORDER=()
for case in snapshots ancestors containers; do
    for c in $CLIENTS; do
        [[ $case == snapshots ]] && pgbench_snapshots_script
        log "$case, $c clients: API (wrk, ${DURATION}s)"
        run_wrk "$case" "$c" "$DURATION"
        API_R[$case|$c]=$RESULT
        log "  -> ${API_R[$case|$c]}; pgbench"
        run_pgbench "$case" "$c" "$DURATION"
        PGB_R[$case|$c]=$RESULT
        log "  -> ${PGB_R[$case|$c]}"
        ORDER+=("$case|$c")
    done
done

# --- open loop ------------------------------------------------------------------------------
PEAK=0
BEST_LOW=0
for c in $CLIENTS; do
    r=${API_R[snapshots|$c]%% *}
    ((r > PEAK)) && PEAK=$r
    ((c < 200 && r > BEST_LOW)) && BEST_LOW=$r
done
RATE=$((PEAK / 2))
((RATE > 0)) || die "no throughput measured"
log "open loop: snapshots at $RATE req/s with 200 connections (${DURATION}s); pgbench -R"
cpu_start
"$HELPER" load --url "$API/graphql" --token "$ADMIN" --body-file "$WORK/snapshots.json" \
    --rate "$RATE" --connections 200 --seconds "$DURATION" >"$WORK/open.json" 2>"$WORK/open.log" ||
    die "the open-loop generator failed: $(tail -5 "$WORK/open.log")"
cpu_per "open|200" "$(jq -r .requests "$WORK/open.json")"
API_R[open|200]=$(jq -r '"\(.rps | floor) \(.p50Ms) \(.p99Ms)"' "$WORK/open.json")
OPEN_ERR=$(jq -r .errors "$WORK/open.json")
NOTE[open|200]="slowest seconds [second, max ms, requests > 50 ms, requests]: $(jq -c .slowestSeconds "$WORK/open.json")"
((OPEN_ERR > 0)) && NOTE[open|200]+="; $OPEN_ERR errors, first: $(jq -r .firstError "$WORK/open.json" | head -c 200)"
pgbench_snapshots_script
run_pgbench snapshots 200 "$DURATION" "$RATE"
PGB_R[open|200]=$RESULT
[[ -n ${PG_NOTE[snapshots|200|open]:-} ]] && PG_NOTE[open|200]=${PG_NOTE[snapshots|200|open]}
ORDER+=("open|200")

# --- createSnapshot bursts ----------------------------------------------------------------
log "createSnapshot: $BURSTS bursts of $BURST concurrent calls"
cpu_start
"$HELPER" create --api "$API" --token "$ADMIN" --first-container 100 --containers 900 \
    --concurrency "$BURST" --count "$((BURST * BURSTS))" --pause-ms 2000 >"$WORK/create.json" 2>"$WORK/create.log" ||
    die "the burst writer failed: $(tail -5 "$WORK/create.log")"
cpu_per "create|$BURST" "$(jq -r .requests "$WORK/create.json")"
API_R[create|$BURST]=$(jq -r '"\(.rps | floor) \(.p50Ms) \(.p99Ms)"' "$WORK/create.json")
CREATE_ERR=$(jq -r .errors "$WORK/create.json")
((CREATE_ERR > 0)) && NOTE[create|$BURST]="$CREATE_ERR errors, first: $(jq -r .firstError "$WORK/create.json" | head -c 200)"
ORDER+=("create|$BURST")

# --- subscriptions --------------------------------------------------------------------------
log "subscriptions: $SUBSCRIBERS sockets, snapshots at $SUB_RATE/s (with the background writer) for ${SUB_SECONDS}s"
sleep 3 # the bursts' jobs finish
"$HELPER" subscribe --url "ws://127.0.0.1:$API_PORT/graphql" --token "$ADMIN" --count "$SUBSCRIBERS" \
    --ready-file "$WORK/subscribed" --settle-seconds 3 >"$WORK/subscribe.json" 2>"$WORK/subscribe.log" &
SUB_PID=$!
PIDS+=("$SUB_PID")
for _ in $(seq 600); do
    [[ -s $WORK/subscribed ]] && break
    kill -0 "$SUB_PID" 2>/dev/null || die "the subscribers exited: $(tail -5 "$WORK/subscribe.log")"
    sleep 0.1
done
[[ -s $WORK/subscribed ]] || die "the subscriptions were not all open after 60 s"
cpu_start
EXTRA_RATE=$(awk -v a="$SUB_RATE" -v b="$WRITE_RATE" 'BEGIN { r = a - b; print (r > 0) ? r : 0 }')
if [[ $EXTRA_RATE != 0 ]]; then
    "$HELPER" create --api "$API" --token "$ADMIN" --first-container 100 --containers 900 \
        --rate "$EXTRA_RATE" --seconds "$SUB_SECONDS" --threads 1 >"$WORK/sub-writer.json" 2>"$WORK/sub-writer.log"
else
    sleep "$SUB_SECONDS"
fi
sleep 3 # the last jobs' events
kill -TERM "$SUB_PID"
wait "$SUB_PID" || die "the subscribers failed: $(tail -5 "$WORK/subscribe.log")"
SUB=$(cat "$WORK/subscribe.json")
cpu_per "subscribe|$SUBSCRIBERS" "$(jq -r '.deliveries + .outsideWindow' <<<"$SUB")"
SUB_EVENTS=$(jq -r .events <<<"$SUB")
SUB_MISSING=$(jq -r .missing <<<"$SUB")
SUB_ERRORS=$(jq -r .errors <<<"$SUB")
SUB_P50=$(jq -r .p50Ms <<<"$SUB")
SUB_P99=$(jq -r .p99Ms <<<"$SUB")
SUB_RPS=$(jq -r '.deliveries / ([.windowSeconds, 0.001] | max) | floor' <<<"$SUB")
API_R[subscribe|$SUBSCRIBERS]="$SUB_RPS $SUB_P50 $SUB_P99"
NOTE[subscribe|$SUBSCRIBERS]=$(jq -r '"\(.events) events in \(.windowSeconds) s, \(.deliveries) deliveries, \(.missing) missing (at most \(.worstConnectionMissing) on one socket), \(.duplicates) duplicates, \(.errors) socket errors, max \(.maxMs) ms"' <<<"$SUB")
ORDER+=("subscribe|$SUBSCRIBERS")

# --- what Postgres saw ----------------------------------------------------------------------
kill -TERM "$WRITER_PID" 2>/dev/null && wait "$WRITER_PID" 2>/dev/null
WRITES=$(jq -r '"\(.requests) background createSnapshot (\(.errors) errors, p50 \(.p50Ms) ms)"' "$WORK/writer.out" 2>/dev/null || echo "?")
kill -TERM "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
AGENT=$(tail -1 "$WORK/agent.out")
q "SELECT calls, round(mean_exec_time::numeric, 3), rows / greatest(calls, 1), left(regexp_replace(query, '\s+', ' ', 'g'), 90)
   FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8" >"$WORK/statements"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------------
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "PASS" : "FAIL" }'; }
echo
echo "API load benchmark ($(nproc) cores; load average $LOAD_START at the start, $LOAD_END at the end;"
echo "$ROWS snapshots, ${DURATION}s per run, background writes $WRITE_RATE snapshots/s; $(date -u +%FT%TZ))"
echo
printf '%-11s %8s %9s %9s %9s %12s %7s %8s  %s\n' case clients "req/s" "p50 ms" "p99 ms" "pgbench r/s" ratio "API CPU" ""
printf '%-11s %8s %9s %9s %9s %12s %7s %8s  %s\n' "" "" "" "" "" "" "" "ms/req" ""
for key in "${ORDER[@]}"; do
    read -r rps p50 p99 <<<"${API_R[$key]}"
    pg="-" ratio="-" note=""
    if [[ -n ${PGB_R[$key]:-} ]]; then
        read -r pg pg50 pg99 <<<"${PGB_R[$key]}"
        ratio=$(awk -v a="$rps" -v b="$pg" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
        note="pgbench p50 $pg50, p99 $pg99"
    fi
    for extra in "${NOTE[$key]:-}" "${PG_NOTE[$key]:-}"; do
        [[ -n $extra ]] && note="${note:+$note; }$extra"
    done
    printf '%-11s %8s %9s %9s %9s %12s %7s %8s  %s\n' "${key%|*}" "${key#*|}" "$rps" "$p50" "$p99" "$pg" "$ratio" \
        "${CPU[$key]:--}" "$note"
done
echo
echo "open: $RATE req/s (half the best closed-loop rate, $PEAK req/s) over at most 200 connections, latency"
echo "from each request's due time (no coordinated omission); pgbench -R $RATE -c 200 (latency includes the"
echo "schedule lag)."
echo "create: bursts of $BURST concurrent createSnapshot; req/s over the bursts themselves."
echo "API CPU: the dcs-api process's CPU time over the run per request (subscribe: per delivery, the"
echo "writes that caused them included)."
echo "subscribe: req/s = deliveries per second; p50/p99 from the event's at to its arrival; the events of"
echo "a window count: from 1 s after every socket had its first event to 3 s before the end."
echo "Writes during the run: $WRITES; fake agent: $AGENT."
echo
read -r S200 S200_50 S200_99 <<<"${API_R[snapshots|200]:-0 0 0}"
read -r PG200 _ <<<"${PGB_R[snapshots|200]:-0 0 0}"
read -r _ OPEN50 OPEN99 <<<"${API_R[open|200]}"
KEEP=$(awk -v a="$S200" -v b="$BEST_LOW" 'BEGIN { printf "%.0f", (b > 0) ? 100 * a / b : 0 }')
SPREAD=$(awk -v a="$S200_99" -v b="$S200_50" 'BEGIN { printf "%.1f", (b > 0) ? a / b : 0 }')
SHARE=$(awk -v a="$S200" -v b="$PG200" 'BEGIN { printf "%.0f", (b > 0) ? 100 * a / b : 0 }')
ALL_EVENTS=$([[ $SUB_MISSING == 0 && $SUB_ERRORS == 0 && $SUB_EVENTS -gt 0 ]] && echo 0 || echo 1)
printf '%-62s %-26s %s\n' "target (snapshots with parents)" measured verdict
printf '%-62s %-26s %s\n' "req/s at 200 clients >= 90% of the best at fewer clients" "$S200 vs $BEST_LOW ($KEEP%)" "$(verdict "$KEEP" 90 '>=')"
printf '%-62s %-26s %s\n' "p99 <= 3 x p50 at 200 clients" "$S200_99 / $S200_50 ms (${SPREAD}x)" "$(verdict "$SPREAD" 3 '<=')"
printf '%-62s %-26s %s\n' "open loop at half the peak, 200 connections: p99 <= 50 ms" "p99 $OPEN99 ms (p50 $OPEN50)" "$(verdict "$OPEN99" 50 '<=')"
printf '%-62s %-26s %s\n' "req/s >= 40% of pgbench's at 200 clients" "$S200 vs $PG200 ($SHARE%)" "$(verdict "$SHARE" 40 '>=')"
printf '%-62s %-26s %s\n' "$SUBSCRIBERS subscriptions get every event" "$SUB_MISSING missing of $SUB_EVENTS x $SUBSCRIBERS" "$(verdict "$ALL_EVENTS" 0 '<=')"
printf '%-62s %-26s %s\n' "... with p99 delivery <= 100 ms" "p99 $SUB_P99 ms (p50 $SUB_P50)" "$(verdict "$SUB_P99" 100 '<=')"
echo
echo "Postgres, heaviest statements over the whole run (calls, mean ms, rows per call, text):"
sed 's/^/  /' "$WORK/statements"
echo
log "done in $((SECONDS - STARTED)) s"
if [[ ${BENCH_STRICT:-0} == 1 ]]; then
    fails=$(printf '%s\n' "$(verdict "$KEEP" 90 '>=')" "$(verdict "$SPREAD" 3 '<=')" "$(verdict "$OPEN99" 50 '<=')" \
        "$(verdict "$SHARE" 40 '>=')" "$(verdict "$ALL_EVENTS" 0 '<=')" "$(verdict "$SUB_P99" 100 '<=')" | grep -c FAIL || true)
    ((fails == 0)) || exit 1
fi
