#!/usr/bin/env bash
# Benchmark: lineage lists (`ancestors`, `descendants`) through the API, this
# checkout against an older commit (default de1a9e8, which walked the lineage one
# SQL query per generation), side by side on the same Postgres database.
#
#   source .dcs-env/env.sh && scripts/bench-lineage.sh
#
# What it does:
#   1. Builds `dcs-api` of this checkout (target/debug) and of the old commit, in a
#      git worktree under /tmp with its own target directory (a cold debug build of
#      the API takes several minutes; later runs reuse it).
#   2. Creates a fresh database, migrates it with the OLD binary (the newer migrations
#      only add nullable columns, so the old server reads the newer schema), and fills
#      it: BENCH_SNAPSHOTS snapshots (default 100,000), of which one chain of
#      BENCH_GENERATIONS generations (default 500) and the rest in chains of 10;
#      ANALYZE.
#   3. Starts both servers against it, mints an admin token for each, and times
#      BENCH_CALLS calls (default 5, after one warm-up) of
#        snapshot(newest of the chain) { ancestors { id } }
#        snapshot(root of the chain)   { descendants { id } }
#      (the new server with `first: 1000`, the old one has no `first`), checking
#      that every answer lists the whole chain.
#   4. Counts the SQL statements of one call of each (Postgres' own statement log,
#      `log_statement = all` on the benchmark database only, read from the Debian
#      cluster's log file; needs root to become the `postgres` user, otherwise the
#      counts are skipped): statements that read the lineage, the root lookup apart.
#   5. Prints the medians and the speed-ups; exits 1 with BENCH_STRICT=1 when a
#      speed-up is under 20x.
#
# Environment: DATABASE_URL (a role that may CREATE DATABASE), BENCH_SNAPSHOTS,
# BENCH_GENERATIONS, BENCH_CALLS, BENCH_OLD_COMMIT, BENCH_STRICT, BENCH_PG_LOG.
# For CI, a tiny seeded round: BENCH_SNAPSHOTS=2000 BENCH_GENERATIONS=50 BENCH_CALLS=1.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${DATABASE_URL:-} ]]; then
    # shellcheck disable=SC1091
    source "${DCS_ENV_DIR:-$ROOT/.dcs-env}/env.sh"
fi
SNAPSHOTS=${BENCH_SNAPSHOTS:-100000}
GENERATIONS=${BENCH_GENERATIONS:-500}
CALLS=${BENCH_CALLS:-5}
OLD_COMMIT=${BENCH_OLD_COMMIT:-de1a9e8}
STRICT=${BENCH_STRICT:-0}
PG_LOG=${BENCH_PG_LOG:-/var/log/postgresql/postgresql-15-main.log}

WORK=$(mktemp -d /tmp/dcs-bench-lineage.XXXXXX)
DB=dcs_bench_lineage_$$
SERVER_URL=$DATABASE_URL
DB_URL="${DATABASE_URL%/*}/$DB"
PIDS=()
# shellcheck disable=SC2317 # run by the EXIT trap, which shellcheck 0.9 does not follow
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql "$SERVER_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- 1. binaries ------------------------------------------------------------
log "building dcs-api of this checkout"
(cd "$ROOT" && cargo build -q -p api --bin dcs-api)
NEW_BIN=$ROOT/target/debug/dcs-api
OLD_TREE=/tmp/dcs-bench-$OLD_COMMIT
OLD_TARGET=/tmp/dcs-bench-$OLD_COMMIT-target
if [[ ! -d $OLD_TREE ]]; then
    git -C "$ROOT" worktree add --detach "$OLD_TREE" "$OLD_COMMIT" >/dev/null
fi
log "building dcs-api of $OLD_COMMIT in $OLD_TREE (target $OLD_TARGET)"
(cd "$OLD_TREE" && CARGO_TARGET_DIR=$OLD_TARGET cargo build -q -p api --bin dcs-api)
OLD_BIN=$OLD_TARGET/debug/dcs-api

# --- 2. database ------------------------------------------------------------
psql "$SERVER_URL" -qc "CREATE DATABASE $DB" >/dev/null
COUNT_STATEMENTS=0
if [[ $(id -u) == 0 && -r $PG_LOG ]] &&
    su postgres -c "psql -qc \"ALTER DATABASE $DB SET log_statement = 'all'\"" >/dev/null 2>&1; then
    COUNT_STATEMENTS=1
else
    log "statement counts skipped (needs root, the postgres user and $PG_LOG)"
fi
DATABASE_URL=$DB_URL "$OLD_BIN" --data-dir "$WORK/old" migrate >/dev/null

FILLER=$((SNAPSHOTS - GENERATIONS - 1))
log "filling $DB: a chain of $GENERATIONS generations and $FILLER other snapshots"
psql "$DB_URL" -v ON_ERROR_STOP=1 -q <<SQL
INSERT INTO snapshots (id, requested_by, node, container_id, pod_namespace, target,
    repository, options, status, phase_bytes_done, phase_bytes_total, last_event_seq,
    dispatch_attempts, created_at, updated_at, finished_at, manifest_digest, parent_id)
SELECT md5('chain-' || g)::uuid, 'alice', 'node-1', 'desk-alice', 'workshop',
    'registry.test/workshops/alice/desk:v' || g, 'registry.test/workshops/alice/desk',
    '{"changes":[],"excludes":[],"compression":"gzip","pause":true}', 'PUSHED', 0, 0, 3, 1,
    timestamptz '2026-01-01' + g * interval '1 minute',
    timestamptz '2026-01-01' + g * interval '1 minute',
    timestamptz '2026-01-01' + g * interval '1 minute',
    'sha256:' || encode(sha256(('chain-' || g)::bytea), 'hex'),
    CASE WHEN g = 0 THEN NULL ELSE md5('chain-' || (g - 1))::uuid END
FROM generate_series(0, $GENERATIONS) g;
INSERT INTO snapshots (id, requested_by, node, container_id, pod_namespace, target,
    repository, options, status, phase_bytes_done, phase_bytes_total, last_event_seq,
    dispatch_attempts, created_at, updated_at, finished_at, manifest_digest, parent_id)
SELECT md5('filler-' || k)::uuid, 'user' || (k % 97), 'node-' || (k % 7), 'desk-' || (k / 10),
    'workshop', 'registry.test/workshops/u/d' || (k / 10) || ':v' || (k % 10),
    'registry.test/workshops/u/d' || (k / 10),
    '{"changes":[],"excludes":[],"compression":"gzip","pause":true}', 'PUSHED', 0, 0, 3, 1,
    timestamptz '2025-01-01' + k * interval '1 second',
    timestamptz '2025-01-01' + k * interval '1 second',
    timestamptz '2025-01-01' + k * interval '1 second',
    'sha256:' || encode(sha256(('filler-' || k)::bytea), 'hex'),
    CASE WHEN k % 10 = 0 THEN NULL ELSE md5('filler-' || (k - 1))::uuid END
FROM generate_series(0, $((FILLER - 1))) k;
ANALYZE snapshots;
SQL
NEWEST=$(psql "$DB_URL" -Atc "SELECT md5('chain-$GENERATIONS')::uuid")
ROOT_ID=$(psql "$DB_URL" -Atc "SELECT md5('chain-0')::uuid")
log "$(psql "$DB_URL" -Atc "SELECT count(*) FROM snapshots") snapshots; chain $ROOT_ID .. $NEWEST"

# --- 3. servers -------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name binary: writes $WORK/<name>.port and .token
    local name=$1 bin=$2 port
    port=$(free_port)
    mkdir -p "$WORK/$name"
    DATABASE_URL=$DB_URL RUST_LOG=warn "$bin" --data-dir "$WORK/$name" serve \
        --listen "127.0.0.1:$port" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || {
        cat "$WORK/$name.log" >&2
        exit 1
    }
    echo "$port" >"$WORK/$name.port"
    "$bin" --data-dir "$WORK/$name" token --sub bench --role admin >"$WORK/$name.token"
}
start old "$OLD_BIN"
start new "$NEW_BIN"
OLD_PORT=$(cat "$WORK/old.port") OLD_TOKEN=$(cat "$WORK/old.token")
NEW_PORT=$(cat "$WORK/new.port") NEW_TOKEN=$(cat "$WORK/new.token")
log "old API on :$OLD_PORT, new API on :$NEW_PORT"

query() { # version field -> GraphQL document
    local args=""
    [[ $1 == new ]] && args="(first: 1000)"
    echo "query(\$id: ID!) { snapshot(id: \$id) { $2$args { id } } }"
}
call() { # version field id -> seconds; checks the list
    local version=$1 field=$2 id=$3 port token body
    if [[ $version == old ]]; then port=$OLD_PORT token=$OLD_TOKEN; else port=$NEW_PORT token=$NEW_TOKEN; fi
    body=$(jq -nc --arg q "$(query "$version" "$field")" --arg id "$id" '{query: $q, variables: {id: $id}}')
    curl -s -o "$WORK/answer.json" -w '%{time_total}' -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$port/graphql"
    local length
    length=$(jq ".data.snapshot.$field | length" "$WORK/answer.json")
    if [[ $length != "$GENERATIONS" ]]; then
        echo "$version $field: $length entries, expected $GENERATIONS: $(head -c 300 "$WORK/answer.json")" >&2
        exit 1
    fi
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Statements of one call that read snapshots by a list of ids, by parent, or
# recursively (the lineage walk; the lookup of the named snapshot is by one id).
count_statements() { # version field id
    local before
    before=$(stat -c %s "$PG_LOG")
    call "$@" >/dev/null
    sleep 0.5
    tail -c +"$((before + 1))" "$PG_LOG" | grep -F "@$DB " |
        grep -E 'LOG:  (execute [^:]*|statement):' | grep -v 'FOR UPDATE' |
        grep -cE 'WITH RECURSIVE|"parent_id" IN \(|"snapshots"."id" IN \(' || true
}

# --- 4. measure -------------------------------------------------------------
declare -A TIME SQL
for field in ancestors descendants; do
    id=$NEWEST
    [[ $field == descendants ]] && id=$ROOT_ID
    for version in old new; do
        call "$version" "$field" "$id" >/dev/null # warm-up
    done
    # Round-robin, so background load hits both alike.
    declare -A runs=([old]="" [new]="")
    for _ in $(seq 1 "$CALLS"); do
        for version in old new; do
            runs[$version]+="$(call "$version" "$field" "$id") "
        done
    done
    for version in old new; do
        TIME[$version.$field]=$(tr ' ' '\n' <<<"${runs[$version]}" | grep . | median)
        if [[ $COUNT_STATEMENTS == 1 ]]; then
            SQL[$version.$field]=$(count_statements "$version" "$field" "$id")
        else
            SQL[$version.$field]="-"
        fi
    done
done

# --- 5. report --------------------------------------------------------------
echo
echo "Lineage benchmark: $SNAPSHOTS snapshots, a chain of $GENERATIONS generations,"
echo "median of $CALLS calls through the API (debug builds), load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-12s %14s %14s %10s %16s %16s\n' field "old $OLD_COMMIT" new speed-up "old lineage SQL" "new lineage SQL"
status=0
for field in ancestors descendants; do
    old=${TIME[old.$field]} new=${TIME[new.$field]}
    speedup=$(awk -v o="$old" -v n="$new" 'BEGIN { printf "%.0f", o / n }')
    printf '%-12s %13.3fs %13.3fs %9sx %16s %16s\n' "$field" "$old" "$new" "$speedup" \
        "${SQL[old.$field]}" "${SQL[new.$field]}"
    if ((speedup < 20)); then status=1; fi
done
echo "(lineage SQL: statements of one call that read snapshots by a list of ids, by parent"
echo " or recursively; the lookup of the snapshot the query names comes on top)"
if [[ $status == 1 ]]; then
    echo "speed-up under the 20x target" >&2
    [[ $STRICT == 1 ]] && exit 1
fi
exit 0
