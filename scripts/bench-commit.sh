#!/usr/bin/env bash
# Benchmark: `dcs-agent commit` against containerd's Diff service.
#
#   source .dcs-env/env.sh && scripts/bench-commit.sh
#
# The Diff service path is `ctr snapshots --snapshotter overlayfs diff <container>`: the
# container's active snapshot against its parent, written as a gzip blob into the
# content store (what `nerdctl commit` and the old proof of concept do). Only that ctr
# command is timed; it does NOT push. Our figures are the wall time of a whole
# `dcs-agent commit` process, push to $DCS_REGISTRY included.
#
# Cases (each timed figure is the median of N runs after one warm-up run; the
# measurements of a case run round-robin, so background load hits them alike; the load
# average is logged, since on a small shared machine it moves the figures a lot):
#   1. 200 MB change (half incompressible, half log text, 8 files) on the tiny busybox
#      base: Diff service vs ours (zstd) vs ours (gzip). The new layer is unlinked from
#      the target repository before every run, so every run really uploads it.
#   2. One-line change (`echo x >> /etc/motd`) on a ~650 MB / ~50,000-file base whose
#      blobs are already in the registry, vs the same change on the tiny base.
#   3. Peak RSS (`/usr/bin/time -v`) of `dcs-agent commit` on a 1 GB change, zstd and gzip.
#   4. 1 GB change in 10,000 files, nothing writing, beside the floor measured in the
#      same rounds: `tar` of the upper directory, hashed (`openssl dgst -sha256`) and
#      piped through `zstd -T0 -1` (or `pigz -1`) whose output is hashed too. Paused ms,
#      prepare ms (read while running), end to end (push included), ratio to the floor,
#      peak RSS. Targets: paused <= 300 ms; end to end <= 1.5x the floor. The zstd
#      commit is also timed with --local-image (containerd keeps the image too), for
#      the record: no target.
#   5. Case 4 with a process in the container appending a line to 20 of the files
#      every 10 ms during the commit: the pause may add the time to read those again.
#   6. Peak RSS of a commit of a 5 GB change (5 x case 4's files), zstd: <= 64 MB.
#   7. Flatten (issue 10): a 5-generation chain on the tiny base, 200 MB of case 1's data
#      added in each generation (gen k runs gen k-1's image). The fifth container is
#      committed appended (one more layer, today's commit) and flattened onto the tiny
#      base (its layer plus one 1 GB layer), round-robin: wall, paused ms, layer size,
#      peak RSS (<= 64 MB for both). Flatten reads through containerd's Diff service and
#      pauses the desktop for the whole read.
#
# Look before you push (issue 11), timed in the same rounds as the commits:
#   - case 1 with BENCH_BASELINE_BIN: the agent built without the secret scan, beside
#     ours; the scan may add at most 15% to the 200 MB commit (zstd and gzip);
#   - case 2: `dcs-agent preview` of the one-line change on the big base: <= 100 ms;
#   - case 4: `dcs-agent preview` of the 1 GB change: at least 2x faster than committing
#     it (zstd).
#
# Environment:
#   DCS_AGENT_BIN       use this binary instead of `cargo build --release -p node-agent`
#   BENCH_BASELINE_BIN  another agent binary (e.g. main before a change, built in a worktree
#                       of its own with its own target directory) timed beside ours in case 1
#   BENCH_RUNS          timed runs of multi-second measurements (default 3)
#   BENCH_FAST_RUNS     timed runs of sub-second measurements (default 5)
#   BENCH_CASES         cases to run (default "1 2 3 4 5 6 7"); a quiet window is at most
#                       ~10 minutes, so run them a few at a time
#   BENCH_NAMESPACE     containerd namespace (default bench)
#   BENCH_KEEP_CACHE    1 (default): keep the base images (busybox, big-base) in the
#                       namespace and the registry for the next run; 0: remove them too
#   BENCH_STRICT        1: exit 1 when a target is missed (default 0)
#   BENCH_BIG_FILES, BENCH_BIG_MB  shape of the big base (default 50000 files, 650 MB);
#                       only used when it is built (BENCH_KEEP_CACHE=0 forces a rebuild)
#
# The generated data is pseudo-random (AES-CTR keystream: as incompressible as
# /dev/urandom) and log-like text with fixed seeds and mtimes, so a rerun produces the
# same layers and does not grow the registry's storage (it cannot be garbage-collected
# while others use it).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${DCS_CONTAINERD_SOCKET:-} || -z ${DCS_REGISTRY:-} ]]; then
    # shellcheck disable=SC1091
    source "${DCS_ENV_DIR:-$ROOT/.dcs-env}/env.sh"
fi

NS=${BENCH_NAMESPACE:-bench}
RUNS=${BENCH_RUNS:-3}
FAST_RUNS=${BENCH_FAST_RUNS:-5}
CASES=${BENCH_CASES:-1 2 3 4 5 6 7}
KEEP_CACHE=${BENCH_KEEP_CACHE:-1}
REG=$DCS_REGISTRY
CTR=(ctr -a "$DCS_CONTAINERD_SOCKET" -n "$NS")
EPOCH=946684800 # 2000-01-01, as in make-test-image.sh

TINY_IMAGE=$REG/bench/busybox:1
BIG_IMAGE=$REG/bench/big-base:1
BIG_FILES=${BENCH_BIG_FILES:-50000}
BIG_MB=${BENCH_BIG_MB:-650}

log() { printf '[bench %s load %s] %s\n' "$(date +%T)" "$(cut -d" " -f1 /proc/loadavg)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in ctr jq curl openssl mawk python3 skopeo tar zstd; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
if [[ ! -x /usr/bin/time ]]; then
    log "installing Debian package time (for /usr/bin/time -v)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi
if ! command -v pigz >/dev/null; then
    log "installing Debian package pigz (the gzip floor)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q pigz >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dcs-bench.XXXXXX")
STATE=$WORK/agent-state
mkdir -p "$STATE"
CONTAINERS=(bench-c1 bench-c3 bench-big bench-tiny bench-gen bench-c4 bench-c6
    bench-g1 bench-g2 bench-g3 bench-g4 bench-g5)
TEMP_IMAGES=()

remove_container() {
    "${CTR[@]}" tasks rm -f "$1" >/dev/null 2>&1 || true
    "${CTR[@]}" containers rm "$1" >/dev/null 2>&1 || true
}

# shellcheck disable=SC2317 # runs from the EXIT trap, which shellcheck does not follow
cleanup() {
    local rc=$?
    set +e
    log "cleaning up"
    for c in "${CONTAINERS[@]}"; do remove_container "$c"; done
    for image in "${TEMP_IMAGES[@]}"; do "${CTR[@]}" images rm "$image" >/dev/null 2>&1; done
    if [[ $KEEP_CACHE == 0 ]]; then
        "${CTR[@]}" images rm "$TINY_IMAGE" "$BIG_IMAGE" >/dev/null 2>&1
        for repo in busybox big-base; do
            local d
            d=$(curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
                "http://$REG/v2/bench/$repo/manifests/1" 2>/dev/null |
                tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
            [[ -n $d ]] && curl -fsS -o /dev/null -X DELETE "http://$REG/v2/bench/$repo/manifests/$d"
        done
        # The namespace goes once it is empty (containerd collects the content first).
        for _ in 1 2 3 4 5; do
            "${CTR[@]}" snapshots --snapshotter overlayfs ls -q 2>/dev/null | grep . >/dev/null || break
            sleep 1
        done
        ctr -a "$DCS_CONTAINERD_SOCKET" namespaces rm "$NS" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

# seconds between two $EPOCHREALTIME values
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }
# median of the numbers on stdin
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# column $2 of file $1, median
col_median() { awk -v c="$2" '{ print $c }' "$1" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.1f\n", a / b }'; }
ratio2() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.2f\n", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f\n", b / 1048576 }'; }

cexec() {
    local id=$1
    shift
    "${CTR[@]}" tasks exec --exec-id "bench-$RANDOM$RANDOM" "$id" "$@" </dev/null
}

# run_container ID IMAGE [ctr run options...]; pulls IMAGE first when the namespace
# lacks it (a committed image is in the registry only, unless --local-image), as
# kubelet would
run_container() {
    local id=$1 image=$2
    shift 2
    remove_container "$id"
    has_image "$image" || "${CTR[@]}" images pull --plain-http --snapshotter overlayfs "$image" >/dev/null
    "${CTR[@]}" run -d --snapshotter overlayfs "$@" "$image" "$id" sleep 100000000 >/dev/null
}

# (no grep -q after a pipe: with pipefail, an early exit of grep fails the pipeline)
has_image() { "${CTR[@]}" images ls -q 2>/dev/null | grep -xF "$1" >/dev/null; }
in_registry() { # REPO TAG
    curl -fsS -o /dev/null -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$REG/v2/$1/manifests/$2" 2>/dev/null
}

# Unlinks the top layer of REPO:TAG from REPO, so that the next push must upload it
# (the blob data itself stays in the registry's storage).
forget_top_layer() { # REPO TAG
    local manifest digest
    manifest=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$REG/v2/$1/manifests/$2" 2>/dev/null) || return 0
    digest=$(jq -r '.layers[-1].digest // empty' <<<"$manifest")
    [[ -n $digest ]] || return 0
    curl -fsS -o /dev/null -X DELETE "http://$REG/v2/$1/blobs/$digest" 2>/dev/null || true
}

# agent CONTAINER TARGET COMPRESSION: one commit; JSON in $WORK/out.json;
# prints "wall durationMs diffMs pushMs pausedMs bytesUploaded layerSize prepareMs
# maxRssKB deltaUncompressed" (prepareMs and deltaUncompressed 0 from agents without them)
agent() { agent_with "$AGENT" "$@"; }
# Extra options of the next commits (case 7's --flatten-base).
AGENT_EXTRA=()

# agent_with BINARY CONTAINER TARGET COMPRESSION: the same with another agent binary
agent_with() {
    local t0 t1 bin=$1
    shift
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%M' -o "$WORK/rss.txt" \
        "$bin" commit --containerd-socket "$DCS_CONTAINERD_SOCKET" --namespace "$NS" \
        --container "$1" --target "$2" --insecure-registry "$REG" --compression "$3" \
        --state-dir "$STATE" "${AGENT_EXTRA[@]}" >"$WORK/out.json" || die "dcs-agent commit $1 -> $2 failed"
    t1=$EPOCHREALTIME
    printf '%s %s %s %s\n' "$(elapsed "$t0" "$t1")" \
        "$(jq -r '"\(.durationMs) \(.diffMs) \(.pushMs) \(.pausedMs) \(.push.bytesUploaded) \(.layer.size) \(.prepareMs // 0)"' "$WORK/out.json")" \
        "$(tail -n 1 "$WORK/rss.txt")" "$(jq -r '.deltaLayer.uncompressedSize // 0' "$WORK/out.json")"
}

# agent_preview CONTAINER: one `dcs-agent preview` (the whole process, as a caller
# sees it); prints "wall files totalBytes findings"
agent_preview() {
    local t0 t1
    t0=$EPOCHREALTIME
    "$AGENT" preview --containerd-socket "$DCS_CONTAINERD_SOCKET" --namespace "$NS" \
        --container "$1" >"$WORK/preview.json" || die "dcs-agent preview $1 failed"
    t1=$EPOCHREALTIME
    printf '%s %s\n' "$(elapsed "$t0" "$t1")" \
        "$(jq -r '"\(.files) \(.totalBytes) \(.findings.findings | length)"' "$WORK/preview.json")"
}

# upper_dir CONTAINER: the host path of the container's overlay upper directory
upper_dir() {
    "${CTR[@]}" snapshots --snapshotter overlayfs mounts /mnt "$1" |
        tr ',' '\n' | sed -n 's/^upperdir=//p' | head -n 1
}

# floor CONTAINER COMPRESSOR...: seconds of the floor pipeline on the container's
# upper directory: tar, hashed, compressed, the compressed stream hashed
floor() {
    local upper t0 t1
    upper=$(upper_dir "$1")
    [[ -d $upper ]] || die "no upper directory for $1"
    shift
    t0=$EPOCHREALTIME
    tar -C "$upper" -cf - . | tee >(openssl dgst -sha256 >/dev/null) | "$@" | openssl dgst -sha256 >/dev/null
    t1=$EPOCHREALTIME
    printf '%s\n' "$(elapsed "$t0" "$t1")"
}

# diff_service CONTAINER: seconds of `ctr snapshots diff` (blob goes to stdout -> size)
diff_service() {
    local t0 t1 size
    t0=$EPOCHREALTIME
    size=$("${CTR[@]}" snapshots --snapshotter overlayfs diff "$1" | wc -c)
    t1=$EPOCHREALTIME
    [[ $size -gt 0 ]] || die "ctr snapshots diff $1 wrote nothing"
    printf '%s %s\n' "$(elapsed "$t0" "$t1")" "$size"
}

# A measurement spec is "SERIES|diff|CONTAINER", "SERIES|floor|CONTAINER|COMPRESSOR",
# "SERIES|preview|CONTAINER" or "SERIES|agent|CONTAINER|TARGET|COMPRESSION[|forget]"
# (forget: unlink the new layer from the target repository first, so that the push
# uploads it); "baseline" instead of "agent" runs BENCH_BASELINE_BIN, "flatten"
# commits with --flatten-base "$FLATTEN_BASE", "local" with --local-image.
# interleave N WARMUP SPEC...: (one warm-up round if WARMUP is 1, then) N rounds, each
# running every spec once in turn, so that background load hits all of them alike.
# Timed lines are appended to SERIES; the warm-up's JSON goes to SERIES.json.
interleave() {
    local n=$1 warmup=$2
    shift 2
    local first=1 i spec series kind container target compression forget line label repo
    [[ $warmup == 1 ]] && first=0
    for i in $(seq "$first" "$n"); do
        for spec in "$@"; do
            IFS='|' read -r series kind container target compression forget <<<"$spec"
            if [[ $kind == diff ]]; then
                line=$(diff_service "$container")
                label="Diff service, $container"
            elif [[ $kind == floor ]]; then
                # shellcheck disable=SC2086 # the compressor's words
                line=$(floor "$container" $target)
                label="floor ($target), $container"
            elif [[ $kind == preview ]]; then
                line=$(agent_preview "$container")
                label="preview, $container"
            else
                if [[ -n $forget ]]; then
                    repo=${target#*/}
                    forget_top_layer "${repo%:*}" "${target##*:}"
                fi
                if [[ $kind == baseline ]]; then
                    line=$(agent_with "$BASELINE" "$container" "$target" "$compression")
                    label="baseline $compression, $container"
                elif [[ $kind == flatten ]]; then
                    AGENT_EXTRA=(--flatten-base "$FLATTEN_BASE")
                    line=$(agent "$container" "$target" "$compression")
                    AGENT_EXTRA=()
                    label="ours flattened $compression, $container"
                elif [[ $kind == local ]]; then
                    AGENT_EXTRA=(--local-image)
                    line=$(agent "$container" "$target" "$compression")
                    AGENT_EXTRA=()
                    label="ours $compression --local-image, $container"
                else
                    line=$(agent "$container" "$target" "$compression")
                    label="ours $compression, $container"
                fi
                [[ $i -eq 0 ]] && cp "$WORK/out.json" "$series.json"
            fi
            if [[ $i -eq 0 ]]; then
                log "  $label, warm-up: $line"
            else
                log "  $label, run $i: $line"
                echo "$line" >>"$series"
            fi
        done
    done
}

# One line of detail: medians of an agent series.
detail() { # LABEL SERIES
    printf '  %-34s wall %6.3f s  durationMs %6s  diffMs %6s  pushMs %6s  pausedMs %6s  uploaded %7s MB  layer %7s MB\n' \
        "$1" "$(col_median "$2" 1)" "$(col_median "$2" 2)" "$(col_median "$2" 3)" \
        "$(col_median "$2" 4)" "$(col_median "$2" 5)" "$(mb "$(col_median "$2" 6)")" "$(mb "$(col_median "$2" 7)")"
}

ROWS=()
FAILED=0
row() { # CASE OURS DIFF RATIO TARGET OK
    local verdict=PASS
    if [[ $6 != 1 ]]; then verdict=FAIL; FAILED=1; fi
    ROWS+=("$(printf '%-36s %12s %12s %9s %-16s %s' "$1" "$2" "$3" "$4" "$5" "$verdict")")
}

# -------------------------------------------------------------- test data

# gen_change DIR MB: DIR/data with MB megabytes in 8 files, half pseudo-random
# (incompressible), half log-like text; fixed seeds and mtimes.
gen_change() {
    local dir=$1/data each=$(($2 * 1048576 / 8))
    mkdir -p "$dir"
    for i in 1 2 3 4; do
        head -c "$each" /dev/zero |
            openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$i")" -iv "$(printf '%032x' 1)" \
                >"$dir/random-$i.bin"
        mawk -v seed="$i" -v size="$each" 'BEGIN {
            srand(seed); split("GET POST PUT DELETE PATCH", m, " "); split("INFO WARN DEBUG ERROR", l, " ")
            split("users items orders carts sessions assets reports workshops desktops", r, " ")
            while (n < size) {
                s = sprintf("2026-11-%02d %02d:%02d:%02d.%03d %-5s [worker-%d] %s /api/v1/%s/%d status=%d bytes=%d dur=%.3fms user=u%05d\n",
                    1 + int(rand() * 28), int(rand() * 24), int(rand() * 60), int(rand() * 60), int(rand() * 1000),
                    l[1 + int(rand() * 4)], int(rand() * 16), m[1 + int(rand() * 5)], r[1 + int(rand() * 9)],
                    int(rand() * 100000), 200 + int(rand() * 4) * 100, int(rand() * 65536), rand() * 250, int(rand() * 50000))
                if (n + length(s) > size) s = substr(s, 1, size - n)
                printf "%s", s; n += length(s)
            } }' >"$dir/text-$i.log"
    done
    touch -d "@$EPOCH" "$dir"/* "$dir" "$1"
}

# gen_big_tree DIR: DIR/opt/bigbase with BIG_FILES files, BIG_MB megabytes in all;
# log-normal sizes (median ~4 KB), 40 % of the files incompressible, the rest text.
gen_big_tree() {
    python3 - "$1/opt/bigbase" "$BIG_FILES" "$BIG_MB" "$EPOCH" <<'EOF'
import os, random, sys
root, nfiles, total_mb, epoch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(650)
pool = 8 << 20
rand_pool = rng.randbytes(pool)
words = ("desktop workshop speaker container image layer registry config node agent commit "
         "overlay snapshot manifest digest kubernetes service deploy install package library "
         "include define return static const struct error value result option").split()
lines, n = [], 0
while n < pool:
    line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + f" {rng.randint(0, 99999)}\n"
    lines.append(line); n += len(line)
text_pool = "".join(lines).encode()[:pool]
sizes = [rng.lognormvariate(8.4, 1.5) for _ in range(nfiles)]
scale = total_mb * 1048576 / sum(sizes)
sizes = [min(int(s * scale), 6 << 20) for s in sizes]
dirs = []
for i in range(nfiles):
    d = os.path.join(root, f"pkg{i % 40:02d}", f"sub{(i // 40) % 25:02d}")
    if i < 1000:
        os.makedirs(d, exist_ok=True); dirs.append(d)
    size = sizes[i]
    src = rand_pool if rng.random() < 0.4 else text_pool
    off = rng.randrange(0, pool - size) if size < pool else 0
    path = os.path.join(d, f"file{i:05d}.dat")
    with open(path, "wb") as f:
        f.write(src[off:off + size])
    os.utime(path, (epoch, epoch))
for d in dirs + [os.path.join(root, f"pkg{i:02d}") for i in range(40)] + [root, os.path.dirname(root)]:
    os.utime(d, (epoch, epoch))
print(f"{nfiles} files, {sum(sizes) / 1048576:.0f} MB")
EOF
}

# ------------------------------------------------------------------ set-up

log "git: $(git -C "$ROOT" log --oneline | head -3 | tr '\n' '|')"
if git -C "$ROOT" diff --quiet HEAD -- node-agent 2>/dev/null; then
    log "node-agent has no uncommitted changes"
else
    log "node-agent has uncommitted changes: $(git -C "$ROOT" status --short -- node-agent | tr '\n' ' ')"
fi
if grep -qi placeholder "$ROOT/node-agent/src/layer/pgzip.rs" 2>/dev/null; then
    log "note: node-agent/src/layer/pgzip.rs is still the single-threaded placeholder"
fi

if [[ -n ${DCS_AGENT_BIN:-} ]]; then
    AGENT=$DCS_AGENT_BIN
else
    log "building the release binary (cargo build --release -p node-agent)"
    (cd "$ROOT" && cargo build --release -q -p node-agent)
    AGENT=${CARGO_TARGET_DIR:-$ROOT/target}/release/dcs-agent
fi
[[ -x $AGENT ]] || die "no agent binary at $AGENT"
log "agent: $AGENT ($(stat -c %y "$AGENT" | cut -d. -f1)); $(nproc) CPUs"
BASELINE=${BENCH_BASELINE_BIN:-}
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE ]] || die "no baseline agent binary at $BASELINE"
    log "baseline agent: $BASELINE ($(stat -c %y "$BASELINE" | cut -d. -f1))"
fi

for c in "${CONTAINERS[@]}"; do remove_container "$c"; done

if ! has_image "$TINY_IMAGE" || ! in_registry bench/busybox 1; then
    log "building the tiny base image $TINY_IMAGE"
    "$ROOT/scripts/make-test-image.sh" "$WORK/busybox.tar" "$TINY_IMAGE" >/dev/null
    "${CTR[@]}" images import --snapshotter overlayfs "$WORK/busybox.tar" >/dev/null
    skopeo copy -q --dest-tls-verify=false "oci-archive:$WORK/busybox.tar" "docker://$TINY_IMAGE"
    rm -f "$WORK/busybox.tar"
fi

# ------------------------------------------------------------------ case 1

case1() {
    log "case 1: 200 MB change on the tiny base"
    log "  (ours: wall durationMs diffMs pushMs pausedMs bytesUploaded layerSize; Diff service: seconds blobBytes)"
    gen_change "$WORK/c1" 200
    run_container bench-c1 "$TINY_IMAGE" --mount "type=bind,src=$WORK/c1,dst=/var/tmp,options=rbind:ro"
    cexec bench-c1 /bin/busybox sh -c 'busybox cp -a /var/tmp/data /data && busybox touch -r /bin/busybox /'
    rm -rf "$WORK/c1" # the container's copy is what counts

    : >"$WORK/c1-diff"
    : >"$WORK/c1-zstd"
    : >"$WORK/c1-gzip"
    local specs=("$WORK/c1-diff|diff|bench-c1"
        "$WORK/c1-zstd|agent|bench-c1|$REG/bench/c1:zstd|zstd|forget"
        "$WORK/c1-gzip|agent|bench-c1|$REG/bench/c1:gzip|gzip|forget")
    if [[ -n $BASELINE ]]; then
        : >"$WORK/c1-zstd-base"
        : >"$WORK/c1-gzip-base"
        specs+=("$WORK/c1-zstd-base|baseline|bench-c1|$REG/bench/c1:zstd|zstd|forget"
            "$WORK/c1-gzip-base|baseline|bench-c1|$REG/bench/c1:gzip|gzip|forget")
    fi
    interleave "$RUNS" 1 "${specs[@]}"
    TEMP_IMAGES+=("$REG/bench/c1:zstd" "$REG/bench/c1:gzip")

    local d z g
    d=$(col_median "$WORK/c1-diff" 1)
    z=$(col_median "$WORK/c1-zstd" 1)
    g=$(col_median "$WORK/c1-gzip" 1)
    local rz rg
    rz=$(ratio "$d" "$z")
    rg=$(ratio "$d" "$g")
    echo
    echo "Case 1: 200 MB change on the tiny base (median of $RUNS runs after a warm-up)"
    printf '  %-34s %6.3f s   gzip blob %s MB, no push\n' "Diff service (ctr snapshots diff)" "$d" "$(mb "$(col_median "$WORK/c1-diff" 2)")"
    detail "ours zstd (incl. push)" "$WORK/c1-zstd"
    detail "ours gzip (incl. push)" "$WORK/c1-gzip"
    printf '  speed-up: zstd %sx (target >= 5x), gzip %sx (target >= 2.5x)\n' "$rz" "$rg"
    local xz xg
    xz=$(awk '{ print ($2 - $4) / 1000 }' "$WORK/c1-zstd" | median)
    xg=$(awk '{ print ($2 - $4) / 1000 }' "$WORK/c1-gzip" | median)
    printf '  for reference, ours without the push (durationMs - pushMs): zstd %s s (%sx), gzip %s s (%sx)\n' \
        "$xz" "$(ratio "$d" "$xz")" "$xg" "$(ratio "$d" "$xg")"
    printf '  layer digests: zstd %s, gzip %s\n' "$(jq -r .layer.digest "$WORK/c1-zstd.json" | cut -c1-19)" \
        "$(jq -r .layer.digest "$WORK/c1-gzip.json" | cut -c1-19)"
    row "1. 200 MB change, zstd" "${z} s" "${d} s" "${rz}x" ">= 5x" "$(ge "$rz" 5 && echo 1)"
    row "1. 200 MB change, gzip" "${g} s" "${d} s" "${rg}x" ">= 2.5x" "$(ge "$rg" 2.5 && echo 1)"
    if [[ -n $BASELINE ]]; then
        local c ours base r
        echo "  with and without the secret scan (BENCH_BASELINE_BIN), the same rounds:"
        for c in zstd gzip; do
            ours=$(col_median "$WORK/c1-$c" 1)
            base=$(col_median "$WORK/c1-$c-base" 1)
            r=$(ratio2 "$ours" "$base")
            detail "baseline $c (incl. push)" "$WORK/c1-$c-base"
            printf '  %s: ours %s s, baseline %s s, ratio %s (target <= 1.15)\n' "$c" "$ours" "$base" "$r"
            row "1. scan overhead, $c" "${ours} s" "base ${base} s" "${r}x" "<= 1.15x" "$(le "$r" 1.15 && echo 1)"
        done
    fi
    remove_container bench-c1
}

# ------------------------------------------------------------------ case 2

ensure_big_base() {
    if has_image "$BIG_IMAGE" && in_registry bench/big-base 1; then
        log "reusing $BIG_IMAGE"
        return
    fi
    log "building $BIG_IMAGE: $BIG_FILES files, ~$BIG_MB MB (cached for later runs)"
    local t0=$EPOCHREALTIME
    gen_big_tree "$WORK/big" >&2
    run_container bench-gen "$TINY_IMAGE" --mount "type=bind,src=$WORK/big,dst=/var/tmp,options=rbind:ro"
    cexec bench-gen /bin/busybox sh -c 'busybox cp -a /var/tmp/opt /opt && busybox touch -r /bin/busybox /'
    rm -rf "$WORK/big"
    agent bench-gen "$BIG_IMAGE" zstd >/dev/null
    log "  committed: $(jq -c '{layer: .layer.size, uncompressed: .layer.uncompressedSize, durationMs, diffMs, pushMs}' "$WORK/out.json")"
    remove_container bench-gen
    log "  base built in $(elapsed "$t0" "$EPOCHREALTIME") s"
}

case2() {
    log "case 2: one-line change, ~$BIG_MB MB base vs tiny base"
    ensure_big_base
    local t0=$EPOCHREALTIME
    run_container bench-big "$BIG_IMAGE" # unpacks the image on first use
    log "  big container ready in $(elapsed "$t0" "$EPOCHREALTIME") s"
    run_container bench-tiny "$TINY_IMAGE"
    for c in bench-big bench-tiny; do
        cexec "$c" /bin/busybox sh -c 'echo x >> /etc/motd'
    done
    TEMP_IMAGES+=("$REG/bench/big-child:1" "$REG/bench/tiny-child:1")

    local big="$WORK/c2-big|agent|bench-big|$REG/bench/big-child:1|gzip"
    local tiny="$WORK/c2-tiny|agent|bench-tiny|$REG/bench/tiny-child:1|gzip"
    local look="$WORK/c2-preview|preview|bench-big"
    local f
    for f in c2-big c2-tiny c2-diff-big c2-diff-tiny c2-preview; do : >"$WORK/$f"; done
    interleave "$RUNS" 1 "$big" "$tiny" "$look" "$WORK/c2-diff-big|diff|bench-big" "$WORK/c2-diff-tiny|diff|bench-tiny"
    # more runs of ours (sub-second, so noisier)
    if ((FAST_RUNS > RUNS)); then interleave $((FAST_RUNS - RUNS)) 0 "$big" "$tiny" "$look"; fi

    local ob ot db dt r flat
    ob=$(col_median "$WORK/c2-big" 1)
    ot=$(col_median "$WORK/c2-tiny" 1)
    db=$(col_median "$WORK/c2-diff-big" 1)
    dt=$(col_median "$WORK/c2-diff-tiny" 1)
    r=$(ratio "$db" "$ob")
    flat=$(ratio2 "$ob" "$ot")
    echo
    echo "Case 2: one-line change (ours: median of $((FAST_RUNS > RUNS ? FAST_RUNS : RUNS)) runs; Diff service: median of $RUNS runs)"
    printf '  %-34s %6.3f s\n' "Diff service, ${BIG_MB} MB base" "$db" "Diff service, tiny base" "$dt"
    detail "ours, ${BIG_MB} MB base" "$WORK/c2-big"
    detail "ours, tiny base" "$WORK/c2-tiny"
    printf '  push of the warm-up run (big): %s\n' "$(jq -c .push "$WORK/c2-big.json")"
    printf '  ours %s s (target <= 0.3 s), %sx faster than the Diff service (target >= 20x), big/tiny %s (target <= 1.25)\n' \
        "$ob" "$r" "$flat"
    row "2. 1-line change, ${BIG_MB} MB base" "${ob} s" "${db} s" "${r}x" "<= 0.3 s" "$(le "$ob" 0.3 && echo 1)"
    row "2. 1-line change vs Diff service" "${ob} s" "${db} s" "${r}x" ">= 20x" "$(ge "$r" 20 && echo 1)"
    row "2. 1-line change, big/tiny base" "${ob} s" "tiny ${ot} s" "$flat" "<= 1.25" "$(le "$flat" 1.25 && echo 1)"
    local pv
    pv=$(col_median "$WORK/c2-preview" 1)
    printf '  preview of the one-line change on the %s MB base: %s s (files, bytes, findings: %s)\n' \
        "$BIG_MB" "$pv" "$(tail -n 1 "$WORK/c2-preview" | cut -d" " -f2-)"
    row "2. preview, 1-line change, big base" "${pv} s" "-" "-" "<= 0.1 s" "$(le "$pv" 0.1 && echo 1)"
    remove_container bench-big
    remove_container bench-tiny
}

# ------------------------------------------------------------------ case 3

case3() {
    log "case 3: peak RSS on a 1 GB change"
    gen_change "$WORK/c3" 200
    run_container bench-c3 "$TINY_IMAGE" --mount "type=bind,src=$WORK/c3,dst=/var/tmp,options=rbind:ro"
    # shellcheck disable=SC2016 # expanded by the container's shell
    cexec bench-c3 /bin/busybox sh -c \
        'for i in 1 2 3 4 5; do busybox cp -a /var/tmp/data /data$i || exit 1; done; busybox touch -r /bin/busybox /'
    rm -rf "$WORK/c3"
    echo
    echo "Case 3: peak RSS of dcs-agent commit, 1 GB change (one run each)"
    for compression in zstd gzip; do
        local target=$REG/bench/c3:$compression rss t0 t1
        TEMP_IMAGES+=("$target")
        forget_top_layer bench/c3 "$compression"
        t0=$EPOCHREALTIME
        /usr/bin/time -v -o "$WORK/time.txt" "$AGENT" commit --containerd-socket "$DCS_CONTAINERD_SOCKET" \
            --namespace "$NS" --container bench-c3 --target "$target" --insecure-registry "$REG" \
            --compression "$compression" --state-dir "$STATE" >"$WORK/out.json" ||
            die "dcs-agent commit (1 GB, $compression) failed"
        t1=$EPOCHREALTIME
        rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.txt")
        local rss_mb
        rss_mb=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
        printf '  %-6s max RSS %6s MB   wall %6.3f s  %s  CPU %s\n' "$compression" "$rss_mb" "$(elapsed "$t0" "$t1")" \
            "$(jq -c '{durationMs, diffMs, pushMs, pausedMs, layerMB: (.layer.size / 1048576 | floor), uploadedMB: (.push.bytesUploaded / 1048576 | floor)}' "$WORK/out.json")" \
            "$(awk -F': ' '/Percent of CPU/ { print $2 }' "$WORK/time.txt")"
        row "3. peak RSS, 1 GB change, $compression" "${rss_mb} MB" "-" "-" "<= 64 MB" "$(le "$rss_mb" 64 && echo 1)"
        "${CTR[@]}" images rm "$target" >/dev/null 2>&1 || true
    done
    remove_container bench-c3
}

# ------------------------------------------------------------------ cases 4-6

# gen_files DIR: DIR/data with 10,000 files (100 directories of 100) in 1 GiB, half
# pseudo-random (incompressible), half log-like text; fixed seeds and mtimes.
gen_files() {
    python3 - "$1/data" "$EPOCH" <<'EOF'
import os, random, sys
root, epoch = sys.argv[1], int(sys.argv[2])
rng = random.Random(10000)
pool = 16 << 20
rand_pool = rng.randbytes(pool)
words = ("desktop workshop speaker container image layer registry config node agent commit "
         "overlay snapshot manifest digest GET POST status=200 bytes= dur= user= INFO WARN").split()
lines, n = [], 0
while n < pool:
    line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + f" {rng.randint(0, 99999)}\n"
    lines.append(line); n += len(line)
text_pool = "".join(lines).encode()[:pool]
size = (1 << 30) // 10000
for d in range(100):
    dir = os.path.join(root, f"d{d:02d}")
    os.makedirs(dir, exist_ok=True)
    for f in range(100):
        src = rand_pool if (d * 100 + f) % 2 == 0 else text_pool
        off = rng.randrange(0, pool - size)
        path = os.path.join(dir, f"f{f:03d}.dat")
        with open(path, "wb") as out:
            out.write(src[off:off + size])
        os.utime(path, (epoch, epoch))
    os.utime(dir, (epoch, epoch))
os.utime(root, (epoch, epoch))
EOF
}

# files_container ID COPIES: a container whose change is COPIES x the 1 GiB of
# gen_files (as /data1 ...)
files_container() {
    local id=$1 copies=$2
    gen_files "$WORK/$id"
    run_container "$id" "$TINY_IMAGE" --mount "type=bind,src=$WORK/$id,dst=/var/tmp,options=rbind:ro"
    cexec "$id" /bin/busybox sh -c "for i in \$(busybox seq 1 $copies); do busybox cp -a /var/tmp/data /data\$i || exit 1; done; busybox touch -r /bin/busybox /"
    rm -rf "${WORK:?}/$id"
}

# The appender of case 5: a line into 20 of the files every 10 ms, until /run/stop
# (under /run, which commits exclude) appears.
start_appender() {
    # shellcheck disable=SC2016 # expanded by the container's shell
    "${CTR[@]}" tasks exec --exec-id "appender-$RANDOM" "$1" /bin/busybox sh -c \
        'busybox rm -f /run/stop; while [ ! -e /run/stop ]; do
            for f in 000 005 010 015 020 025 030 035 040 045 050 055 060 065 070 075 080 085 090 095; do
                echo "appended $(busybox date +%s.%N)" >> /data1/d00/f$f.dat
            done
            busybox usleep 10000
        done' </dev/null >/dev/null 2>&1 &
    APPENDER=$!
    sleep 1
}
stop_appender() {
    cexec "$1" /bin/busybox touch /run/stop
    wait "$APPENDER" 2>/dev/null || true
}

# files_report LABEL PREFIX: report and rows of cases 4 and 5 from their series
files_report() {
    local label=$1 p=$2 fz fg
    fz=$(col_median "$p-floor-zstd" 1)
    fg=$(col_median "$p-floor-pigz" 1)
    echo
    echo "$label (median of $RUNS runs after a warm-up)"
    printf '  %-44s %6.3f s\n' "floor: tar | sha256 | zstd -T0 -1 | sha256" "$fz" \
        "floor: tar | sha256 | pigz -1 | sha256" "$fg"
    local c f wall paused prepare rss delta r limit
    for c in zstd gzip; do
        f=$fz
        [[ $c == gzip ]] && f=$fg
        wall=$(col_median "$p-$c" 1)
        paused=$(col_median "$p-$c" 5)
        prepare=$(col_median "$p-$c" 8)
        rss=$(awk '{ print $9 / 1024 }' "$p-$c" | median)
        delta=$(col_median "$p-$c" 10)
        r=$(ratio2 "$wall" "$f")
        printf '  ours %-5s wall %6.3f s (%sx floor)  pausedMs %5s (max %s)  prepareMs %6s  delta %s MB  max RSS %.1f MB\n' \
            "$c" "$wall" "$r" "$paused" "$(awk '{ print $5 }' "$p-$c" | sort -g | tail -n 1)" "$prepare" \
            "$(mb "$delta")" "$rss"
        detail "  ($c)" "$p-$c"
        limit=300
        # case 5: plus the time to read again what the appender changed (at 100 MB/s)
        [[ $p == *c5 ]] && limit=$(awk -v d="$delta" 'BEGIN { printf "%d", 300 + d / 100000 }')
        row "${label:0:7} $c paused" "${paused} ms" "-" "-" "<= $limit ms" "$(le "$paused" "$limit" && echo 1)"
        row "${label:0:7} $c end to end" "${wall} s" "floor ${f} s" "${r}x" "<= 1.5x" "$(le "$r" 1.5 && echo 1)"
        row "${label:0:7} $c peak RSS" "$(printf '%.1f' "$rss") MB" "-" "-" "<= 64 MB" "$(le "$rss" 64 && echo 1)"
    done
    if [[ -s $p-zstd-local ]]; then
        wall=$(col_median "$p-zstd-local" 1)
        printf '  ours zstd with --local-image (containerd keeps the image too): wall %6.3f s (%sx floor)  pausedMs %5s\n' \
            "$wall" "$(ratio2 "$wall" "$fz")" "$(col_median "$p-zstd-local" 5)"
        detail "  (zstd, --local-image)" "$p-zstd-local"
    fi
    local pv cz rp
    pv=$(col_median "$p-preview" 1)
    cz=$(col_median "$p-zstd" 1)
    rp=$(ratio "$cz" "$pv")
    printf '  preview %6.3f s (files, bytes, findings: %s): %sx faster than the zstd commit\n' \
        "$pv" "$(tail -n 1 "$p-preview" | cut -d" " -f2-)" "$rp"
    row "${label:0:7} preview vs zstd commit" "${pv} s" "commit ${cz} s" "${rp}x" ">= 2x" "$(ge "$rp" 2 && echo 1)"
}

# files_case PREFIX CONTAINER: floors and ours, round-robin
files_case() {
    local p=$1 id=$2 f
    for f in floor-zstd floor-pigz zstd zstd-local gzip preview; do : >"$p-$f"; done
    TEMP_IMAGES+=("$REG/bench/c4:zstd" "$REG/bench/c4:gzip" "$REG/bench/c4:zstd-local")
    # Case 4 also times the node keeping its copy of the image (--local-image).
    local local_spec=()
    [[ $p == *c4 ]] && local_spec=("$p-zstd-local|local|$id|$REG/bench/c4:zstd-local|zstd|forget")
    interleave "$RUNS" 1 "$p-floor-zstd|floor|$id|zstd -T0 -1" \
        "$p-floor-pigz|floor|$id|pigz -1" \
        "$p-zstd|agent|$id|$REG/bench/c4:zstd|zstd|forget" \
        "${local_spec[@]}" \
        "$p-gzip|agent|$id|$REG/bench/c4:gzip|gzip|forget" \
        "$p-preview|preview|$id"
}

case4() {
    log "case 4: 1 GB change in 10,000 files, nothing writing, beside the floor"
    files_container bench-c4 1
    files_case "$WORK/c4" bench-c4
    files_report "Case 4: 1 GB in 10,000 files, idle" "$WORK/c4"
    [[ " $CASES " == *" 5 "* ]] || remove_container bench-c4
}

case5() {
    log "case 5: case 4 with a process appending to 20 files during the commit"
    "${CTR[@]}" tasks ls -q 2>/dev/null | grep -x bench-c4 >/dev/null || files_container bench-c4 1
    start_appender bench-c4
    files_case "$WORK/c5" bench-c4
    stop_appender bench-c4
    files_report "Case 5: 1 GB in 10,000 files, appender" "$WORK/c5"
    remove_container bench-c4
}

case6() {
    log "case 6: peak RSS on a 5 GB change (50,000 files)"
    files_container bench-c6 5
    local target=$REG/bench/c6:zstd line rss paused
    TEMP_IMAGES+=("$target")
    forget_top_layer bench/c6 zstd
    line=$(agent bench-c6 "$target" zstd)
    rss=$(awk '{ printf "%.1f", $9 / 1024 }' <<<"$line")
    paused=$(awk '{ print $5 }' <<<"$line")
    echo
    echo "Case 6: 5 GB change in 50,000 files, zstd (one run)"
    printf '  wall %s s  pausedMs %s  prepareMs %s  max RSS %s MB\n' "$(awk '{ print $1 }' <<<"$line")" \
        "$paused" "$(awk '{ print $8 }' <<<"$line")" "$rss"
    row "6. peak RSS, 5 GB change, zstd" "${rss} MB" "-" "-" "<= 64 MB" "$(le "$rss" 64 && echo 1)"
    row "6. paused, 5 GB change, zstd" "${paused} ms" "-" "-" "<= 300 ms" "$(le "$paused" 300 && echo 1)"
    remove_container bench-c6
}

# ------------------------------------------------------------------ case 7

case7() {
    log "case 7: flatten a 5-generation chain, 200 MB in each generation"
    gen_change "$WORK/c7" 200
    local image=$TINY_IMAGE k
    for k in 1 2 3 4 5; do
        run_container "bench-g$k" "$image" --mount "type=bind,src=$WORK/c7,dst=/var/tmp,options=rbind:ro"
        cexec "bench-g$k" /bin/busybox sh -c "busybox cp -a /var/tmp/data /gen$k && busybox touch -r /bin/busybox /"
        [[ $k == 5 ]] && break
        image=$REG/bench/c7:g$k
        TEMP_IMAGES+=("$image")
        agent "bench-g$k" "$image" zstd >/dev/null
        remove_container "bench-g$k"
    done
    rm -rf "$WORK/c7"
    FLATTEN_BASE=$TINY_IMAGE
    : >"$WORK/c7-append"
    : >"$WORK/c7-flatten"
    TEMP_IMAGES+=("$REG/bench/c7:append" "$REG/bench/c7:flat")
    interleave "$RUNS" 1 "$WORK/c7-append|agent|bench-g5|$REG/bench/c7:append|zstd|forget" \
        "$WORK/c7-flatten|flatten|bench-g5|$REG/bench/c7:flat|zstd|forget"
    local layers_append layers_flat a f r rss_a rss_f
    layers_append=$(jq -r .layerCount "$WORK/c7-append.json")
    layers_flat=$(jq -r .layerCount "$WORK/c7-flatten.json")
    a=$(col_median "$WORK/c7-append" 1)
    f=$(col_median "$WORK/c7-flatten" 1)
    r=$(ratio2 "$f" "$a")
    rss_a=$(awk '{ print $9 / 1024 }' "$WORK/c7-append" | median)
    rss_f=$(awk '{ print $9 / 1024 }' "$WORK/c7-flatten" | median)
    echo
    echo "Case 7: 5 generations x 200 MB on the tiny base, zstd (median of $RUNS runs after a warm-up)"
    printf '  append:  %s layers, wall %6.3f s, pausedMs %s, new layer %s MB, max RSS %.1f MB\n' \
        "$layers_append" "$a" "$(col_median "$WORK/c7-append" 5)" "$(mb "$(col_median "$WORK/c7-append" 7)")" "$rss_a"
    printf '  flatten: %s layers, wall %6.3f s, pausedMs %s, new layer %s MB, max RSS %.1f MB (%sx the append)\n' \
        "$layers_flat" "$f" "$(col_median "$WORK/c7-flatten" 5)" "$(mb "$(col_median "$WORK/c7-flatten" 7)")" "$rss_f" "$r"
    detail "append (incl. push)" "$WORK/c7-append"
    detail "flatten (incl. push)" "$WORK/c7-flatten"
    row "7. flatten 5 x 200 MB, zstd" "${f} s" "append ${a} s" "${r}x" "(reported)" 1
    row "7. flatten peak RSS" "$(printf '%.1f' "$rss_f") MB" "-" "-" "<= 64 MB" "$(le "$rss_f" 64 && echo 1)"
    remove_container bench-g5
}

for c in $CASES; do
    case $c in
        1) case1 ;;
        2) case2 ;;
        3) case3 ;;
        4) case4 ;;
        5) case5 ;;
        6) case6 ;;
        7) case7 ;;
        *) die "unknown case $c" ;;
    esac
done

echo
echo "Summary ($(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg); git $(git -C "$ROOT" log --oneline -1 | cut -c1-60))"
printf '%-36s %12s %12s %9s %-16s %s\n' "case" "ours" "Diff service" "ratio" "target" "result"
printf '%s\n' "${ROWS[@]}"
if [[ ${BENCH_STRICT:-0} == 1 && $FAILED == 1 ]]; then exit 1; fi
exit 0
