#!/usr/bin/env bash
# Local test environment for the desktop customisation service: real containerd (two
# instances), Docker's registry (two instances) and PostgreSQL 15, all as plain background
# processes (no systemd, no Docker engine).
#
#   scripts/dev-env.sh start        install what is missing, start everything (idempotent)
#   scripts/dev-env.sh status       show what runs
#   scripts/dev-env.sh env          print the export lines (also in $DCS_ENV_DIR/env.sh)
#   scripts/dev-env.sh stop [--all] stop what `start` started; --all also stops PostgreSQL
#
# State lives in ${DCS_ENV_DIR:-<repo root>/.dcs-env}. Needs root (containerd, mounts, apt).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# Resolve symlinks: the mount table shows real paths and we match mounts by prefix.
DCS_ENV_DIR=$(realpath -m "${DCS_ENV_DIR:-$REPO_ROOT/.dcs-env}")
D=$DCS_ENV_DIR

PACKAGES=(containerd runc docker-registry skopeo busybox-static postgresql-15 faketime
          apache2-utils zstd protobuf-compiler gcc libc6-dev chromium chromium-driver)
PG_VERSION=15
PG_CLUSTER=main
SMALL_TMPFS_SIZE=64m
REGISTRY_USER=dcs

# Per-instance paths. "main" is the normal containerd, "small" has a 64 MiB tmpfs root.
CTR_MAIN=$D/containerd
CTR_SMALL=$D/containerd-small
REG_PLAIN=$D/registry
REG_AUTH=$D/registry-auth

log() { echo "dev-env: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Print the end of a daemon's log and fail: every daemon failure goes through here.
fail_with_log() {
    local what=$1 logfile=$2
    log "ERROR: $what"
    if [[ -f $logfile ]]; then
        echo "----- last lines of $logfile -----" >&2
        tail -n 40 "$logfile" >&2
        echo "-----" >&2
    fi
    exit 1
}

# ---------------------------------------------------------------------------------------
# Processes: we track daemons by pid file and double-check the command line, so a reused
# pid never makes us believe (or kill) something that is not ours.
# ---------------------------------------------------------------------------------------

# pid_alive PIDFILE MARKER: true if the pid in PIDFILE runs and its argv contains MARKER.
pid_alive() {
    local pidfile=$1 marker=$2 pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# start_daemon PIDFILE LOGFILE CMD...: run CMD detached (own session, so it survives this
# script and the caller's terminal) and record its pid. The inner shell writes its own pid
# and then execs CMD, so the pid file names the daemon itself, not a wrapper.
start_daemon() {
    local pidfile=$1 logfile=$2 prog=$3
    shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016
    setsid -f bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null
    local i
    for i in $(seq 50); do
        [[ -s $pidfile ]] && return 0
        sleep 0.1
    done
    fail_with_log "could not start $prog" "$logfile"
}

# kill_pid PID: TERM, wait up to 10 s, then KILL.
kill_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        [[ -d /proc/$pid ]] || return 0
        # A zombie is gone as far as we are concerned.
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

# stop_daemon NAME PIDFILE MARKER
stop_daemon() {
    local name=$1 pidfile=$2 marker=$3
    if pid_alive "$pidfile" "$marker"; then
        log "stopping $name (pid $(<"$pidfile"))"
        kill_pid "$(<"$pidfile")"
    fi
    rm -f "$pidfile"
}

# pids_with_arg STRING: pids whose argv contains STRING (used to find the shims our
# containerd started: they carry `-address <our socket>`).
pids_with_arg() {
    local needle=$1 p
    for p in /proc/[0-9]*; do
        tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$needle" && echo "${p#/proc/}"
    done
    return 0
}

# ---------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------------------------------
# containerd
# ---------------------------------------------------------------------------------------

ctr_sock() { echo "$1/containerd.sock"; }

# Unix socket paths are limited to 107 bytes; containerd adds ".ttrpc" for its second one.
check_socket_path() {
    local sock=$1
    (( ${#sock} + 6 <= 107 )) \
        || die "socket path too long (${#sock} bytes): $sock; use a shorter DCS_ENV_DIR"
}

write_containerd_config() {
    local dir=$1
    cat >"$dir/config.toml" <<EOF
# Generated by scripts/dev-env.sh; rewritten on every start.
version = 2
root = "$dir/root"
state = "$dir/state"
# Kubernetes' CRI plugin is not needed (tests talk to containerd directly) and would
# want CNI and a sandbox image.
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$(ctr_sock "$dir")"

[ttrpc]
  address = "$(ctr_sock "$dir").ttrpc"

[debug]
  level = "info"

# Keep even /opt-style plugin installs private to this instance.
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
}

# wait_containerd NAME DIR: wait for the gRPC API, then check both snapshotters loaded.
wait_containerd() {
    local name=$1 dir=$2 sock i plugins
    sock=$(ctr_sock "$dir")
    for i in $(seq 150); do
        # Liveness by /proc entry: right after the exec, the new command
        # line can read empty for a moment, which pid_alive would misread.
        [[ -d /proc/$(<"$dir/containerd.pid") ]] \
            || fail_with_log "$name exited during start-up" "$dir/containerd.log"
        ctr --address "$sock" version >/dev/null 2>&1 && break
        (( i == 150 )) && fail_with_log "$name did not answer on $sock within 30 s" "$dir/containerd.log"
        sleep 0.2
    done
    plugins=$(ctr --address "$sock" plugins ls)
    local snap
    for snap in overlayfs native; do
        awk -v s="$snap" '$1 == "io.containerd.snapshotter.v1" && $2 == s && $NF == "ok" { f = 1 }
                          END { exit !f }' <<<"$plugins" \
            || fail_with_log "$name: snapshotter $snap did not load
$(grep snapshotter <<<"$plugins")" "$dir/containerd.log"
    done
}

# start_containerd NAME DIR
start_containerd() {
    local name=$1 dir=$2
    mkdir -p "$dir/root" "$dir/state"
    chmod 0711 "$dir/root" "$dir/state"
    check_socket_path "$(ctr_sock "$dir")"
    if pid_alive "$dir/containerd.pid" "$dir/config.toml"; then
        log "$name already running (pid $(<"$dir/containerd.pid"))"
    else
        write_containerd_config "$dir"
        rm -f "$(ctr_sock "$dir")" "$(ctr_sock "$dir").ttrpc"
        log "starting $name"
        echo "=== $(date -u +%FT%TZ) start" >>"$dir/containerd.log"
        start_daemon "$dir/containerd.pid" "$dir/containerd.log" \
            containerd --config "$dir/config.toml"
    fi
    wait_containerd "$name" "$dir"
}

is_mounted() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1; }

# The small instance's root is a 64 MiB tmpfs so tests can fill it up ("no space left on
# device") without touching the real disk.
mount_small_root() {
    mkdir -p "$CTR_SMALL/root"
    if ! is_mounted "$CTR_SMALL/root"; then
        mount -t tmpfs -o "size=$SMALL_TMPFS_SIZE,mode=0711" dcs-small-containerd "$CTR_SMALL/root"
    fi
}

# Everything mounted at or below DIR, deepest first.
mounts_under() {
    local dir=$1
    # Field 5 of mountinfo is the mount point, with spaces etc. octal-escaped.
    awk -v d="$dir" '{ mp = $5; gsub(/\\040/, " ", mp);
                       if (mp == d || index(mp, d "/") == 1) print length(mp) "\t" mp }' \
        /proc/self/mountinfo | sort -rn | cut -f2- | uniq
}

unmount_under() {
    local dir=$1 mp
    while IFS= read -r mp; do
        [[ -n $mp ]] || continue
        umount "$mp" 2>/dev/null || umount -l "$mp" || log "WARNING: could not unmount $mp"
    done < <(mounts_under "$dir")
}

# Kill runc containers whose bundle lives in this instance's state dir. containerd's v2
# shim keeps runc state in /run/containerd/runc/<namespace> whatever containerd's own
# state dir is, so we pick ours out by bundle path.
kill_runc_containers() {
    local dir=$1 runc_root id bundle
    command -v runc >/dev/null || return 0
    for runc_root in /run/containerd/runc/*; do
        [[ -d $runc_root ]] || continue
        while IFS=$'\t' read -r id bundle; do
            [[ -n $id && $bundle == "$dir/state/"* ]] || continue
            log "removing leftover runc container $id ($runc_root)"
            runc --root "$runc_root" kill -a "$id" KILL 2>/dev/null || true
            runc --root "$runc_root" delete -f "$id" 2>/dev/null || true
        done < <(runc --root "$runc_root" list -f json 2>/dev/null \
                 | if command -v jq >/dev/null; then jq -r '.[]? | [.id, .bundle] | @tsv'
                   else sed -n 's/.*"id":"\([^"]*\)".*"bundle":"\([^"]*\)".*/\1\t\2/p'; fi)
    done
}

# stop_containerd NAME DIR: containerd itself, then its shims and containers, then mounts.
stop_containerd() {
    local name=$1 dir=$2 pid
    stop_daemon "$name" "$dir/containerd.pid" "$dir/config.toml"
    kill_runc_containers "$dir"
    for pid in $(pids_with_arg "-address $(ctr_sock "$dir")"); do
        log "stopping leftover shim (pid $pid)"
        kill_pid "$pid"
    done
    unmount_under "$dir/state"
    unmount_under "$dir/root"
    if [[ -n $(mounts_under "$dir") ]]; then
        log "WARNING: still mounted under $dir:"; mounts_under "$dir" >&2
        return 1
    fi
    # The state dir is runtime state (like /run/containerd): start afresh next time.
    rm -rf "$dir/state" "$(ctr_sock "$dir")" "$(ctr_sock "$dir").ttrpc"
}

# ---------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------

# Ports in LISTEN state (from /proc, so no extra tools are needed).
listening_ports() {
    local hex
    # Column 2 is local_address as HEXIP:HEXPORT, column 4 the state (0A = LISTEN).
    awk 'FNR > 1 && $4 == "0A" { n = split($2, a, ":"); print a[n] }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u |
    while read -r hex; do echo $(( 16#$hex )); done
}

free_port() {
    local used port i
    used=" $(listening_ports | tr '\n' ' ') "
    for i in $(seq 200); do
        port=$(( 20000 + RANDOM % 20000 ))
        [[ $used == *" $port "* ]] || { echo "$port"; return 0; }
    done
    die "no free port found"
}

# The port is kept in DIR/port so that restarts give the same address (tests and the
# dockerconfigjson files refer to it); a new one is chosen only if it is taken by others.
registry_port() {
    local dir=$1 port used
    if [[ -s $dir/port ]]; then
        port=$(<"$dir/port")
        used=" $(listening_ports | tr '\n' ' ') "
        if [[ $used != *" $port "* ]]; then echo "$port"; return 0; fi
        log "port $port of $dir is taken by something else; choosing another"
    fi
    port=$(free_port)
    echo "$port" >"$dir/port"
    echo "$port"
}

# http_status PORT PATH: HTTP status code of GET http://127.0.0.1:PORT/PATH, or 000.
http_status() {
    local port=$1 path=$2 line
    # shellcheck disable=SC2016 # $0 and $1 are the inner bash's arguments
    line=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n" "$1" "$0" >&3
        head -n1 <&3' "$port" "$path" 2>/dev/null) || true
    [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] && echo "${BASH_REMATCH[1]}" || echo 000
}

write_registry_config() {
    local dir=$1 port=$2 auth=$3
    cat >"$dir/config.yml" <<EOF
# Generated by scripts/dev-env.sh; rewritten on every start.
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $(head -c 24 /dev/urandom | base64 | tr -d '/+=')
EOF
    if [[ $auth == auth ]]; then
        cat >>"$dir/config.yml" <<EOF
auth:
  htpasswd:
    realm: dcs-test
    path: $dir/htpasswd
EOF
    fi
}

# write_dockerconfig FILE HOSTPORT USER PASSWORD: Kubernetes dockerconfigjson, mode 0600.
write_dockerconfig() {
    local file=$1 hostport=$2 user=$3 pass=$4 auth
    auth=$(printf '%s:%s' "$user" "$pass" | base64 -w0)
    ( umask 077
      printf '{"auths":{"%s":{"username":"%s","password":"%s","auth":"%s"}}}\n' \
          "$hostport" "$user" "$pass" "$auth" >"$file.tmp" )
    chmod 0600 "$file.tmp"
    mv -f "$file.tmp" "$file"
}

# Credentials are created once and kept, so config files stay valid across restarts.
setup_registry_auth() {
    local dir=$1 port=$2
    if [[ ! -s $dir/password ]]; then
        ( umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$dir/password" )
    fi
    local pass
    pass=$(<"$dir/password")
    ( umask 077; htpasswd -Bbn "$REGISTRY_USER" "$pass" >"$dir/htpasswd" )
    write_dockerconfig "$dir/dockerconfig.json" "127.0.0.1:$port" "$REGISTRY_USER" "$pass"
    write_dockerconfig "$dir/dockerconfig-bad.json" "127.0.0.1:$port" "$REGISTRY_USER" "wrong-$pass"
}

# start_registry NAME DIR plain|auth
start_registry() {
    local name=$1 dir=$2 auth=$3 port want i code
    mkdir -p "$dir/storage"
    if pid_alive "$dir/registry.pid" "$dir/config.yml"; then
        port=$(<"$dir/port")
        log "$name already running on 127.0.0.1:$port (pid $(<"$dir/registry.pid"))"
    else
        port=$(registry_port "$dir")
        write_registry_config "$dir" "$port" "$auth"
        log "starting $name on 127.0.0.1:$port"
        echo "=== $(date -u +%FT%TZ) start" >>"$dir/registry.log"
        start_daemon "$dir/registry.pid" "$dir/registry.log" \
            docker-registry serve "$dir/config.yml"
    fi
    [[ $auth == auth ]] && setup_registry_auth "$dir" "$port"
    want=200
    [[ $auth == auth ]] && want=401
    for i in $(seq 100); do
        [[ -d /proc/$(<"$dir/registry.pid") ]] \
            || fail_with_log "$name exited during start-up" "$dir/registry.log"
        code=$(http_status "$port" /v2/)
        [[ $code == "$want" ]] && return 0
        sleep 0.2
    done
    fail_with_log "$name: GET /v2/ on 127.0.0.1:$port gave $code, expected $want" "$dir/registry.log"
}

# ---------------------------------------------------------------------------------------
# PostgreSQL (the Debian cluster; shared with the machine, so `stop` leaves it running)
# ---------------------------------------------------------------------------------------

pg_port() { pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $3 }'; }
pg_logfile() { echo "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log"; }
pg_running() { pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $4 }' | grep -q '^online'; }

# psql as the postgres superuser over the local socket (peer auth). cd / avoids
# "could not change directory" noise when the caller's cwd is not readable by postgres.
pg_sql() { (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -At "$@"); }

start_postgres() {
    if [[ -z $(pg_port) ]]; then
        log "creating PostgreSQL cluster $PG_VERSION/$PG_CLUSTER"
        pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >/dev/null
    fi
    if pg_running; then
        log "PostgreSQL $PG_VERSION/$PG_CLUSTER already running on port $(pg_port)"
    else
        log "starting PostgreSQL $PG_VERSION/$PG_CLUSTER"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start \
            || fail_with_log "PostgreSQL did not start" "$(pg_logfile)"
    fi
    local i
    for i in $(seq 50); do
        pg_sql -p "$(pg_port)" -c 'select 1' >/dev/null 2>&1 && break
        (( i == 50 )) && fail_with_log "PostgreSQL does not accept connections" "$(pg_logfile)"
        sleep 0.2
    done
    # Role and database, idempotently. CREATE DATABASE cannot run inside a DO block.
    pg_sql -p "$(pg_port)" <<'EOF'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dcs') THEN
    CREATE ROLE dcs LOGIN PASSWORD 'dcs' CREATEDB;
  ELSE
    ALTER ROLE dcs LOGIN PASSWORD 'dcs' CREATEDB;
  END IF;
END $$;
EOF
    if [[ -z $(pg_sql -p "$(pg_port)" -c "SELECT 1 FROM pg_database WHERE datname = 'dcs_test'") ]]; then
        pg_sql -p "$(pg_port)" -c 'CREATE DATABASE dcs_test OWNER dcs'
    fi
}

# ---------------------------------------------------------------------------------------
# Environment file
# ---------------------------------------------------------------------------------------

write_env() {
    local tmp=$D/env.sh.tmp
    cat >"$tmp" <<EOF
# Generated by scripts/dev-env.sh start. Use: source $D/env.sh
export DCS_ENV_DIR=$D
export DCS_CONTAINERD_SOCKET=$(ctr_sock "$CTR_MAIN")
export DCS_CONTAINERD_ROOT=$CTR_MAIN/root
export DCS_SMALL_CONTAINERD_SOCKET=$(ctr_sock "$CTR_SMALL")
export DCS_SMALL_CONTAINERD_ROOT=$CTR_SMALL/root
export DCS_REGISTRY=127.0.0.1:$(<"$REG_PLAIN/port")
export DCS_REGISTRY_ROOT=$REG_PLAIN/storage
export DCS_AUTH_REGISTRY=127.0.0.1:$(<"$REG_AUTH/port")
export DCS_AUTH_REGISTRY_CONFIG=$REG_AUTH/dockerconfig.json
export DCS_AUTH_REGISTRY_BAD_CONFIG=$REG_AUTH/dockerconfig-bad.json
export DCS_AGENT_SPOOL_DIR=$D/agent-spool
export DATABASE_URL=postgres://dcs:dcs@127.0.0.1:$(pg_port)/dcs_test
EOF
    mv -f "$tmp" "$D/env.sh"
}

# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

require_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (containerd, mounts, apt-get)"; }

cmd_start() {
    require_root
    install_packages
    mkdir -p "$D" "$CTR_MAIN" "$CTR_SMALL" "$REG_PLAIN" "$REG_AUTH"
    chmod 0711 "$D"
    start_containerd containerd "$CTR_MAIN"
    mount_small_root
    start_containerd "small containerd" "$CTR_SMALL"
    start_registry registry "$REG_PLAIN" plain
    start_registry "auth registry" "$REG_AUTH" auth
    start_postgres
    write_env
    log "ready; run: source $D/env.sh"
}

cmd_stop() {
    require_root
    local all=false rc=0
    [[ ${1:-} == --all ]] && all=true
    stop_daemon registry "$REG_PLAIN/registry.pid" "$REG_PLAIN/config.yml"
    stop_daemon "auth registry" "$REG_AUTH/registry.pid" "$REG_AUTH/config.yml"
    stop_containerd containerd "$CTR_MAIN" || rc=1
    stop_containerd "small containerd" "$CTR_SMALL" || rc=1
    if $all && command -v pg_lsclusters >/dev/null && pg_running; then
        log "stopping PostgreSQL $PG_VERSION/$PG_CLUSTER"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop || rc=1
    fi
    rm -f "$D/env.sh"
    return $rc
}

# status_line NAME RUNNING DETAIL
status_line() { printf '%-18s %-8s %s\n' "$1" "$2" "$3"; }

cmd_status() {
    local dir name state
    for dir in "$CTR_MAIN" "$CTR_SMALL"; do
        name=${dir##*/}
        if pid_alive "$dir/containerd.pid" "$dir/config.toml" \
           && ctr --address "$(ctr_sock "$dir")" version >/dev/null 2>&1; then
            state="running"
        else
            state="stopped"
        fi
        status_line "$name" "$state" "$(ctr_sock "$dir")"
    done
    if is_mounted "$CTR_SMALL/root"; then
        status_line "small tmpfs" mounted "$(df -h --output=used,size "$CTR_SMALL/root" | tail -n1 | awk '{print $1 " used of " $2}')"
    else
        status_line "small tmpfs" "-" "not mounted"
    fi
    for dir in "$REG_PLAIN" "$REG_AUTH"; do
        name=${dir##*/}
        if pid_alive "$dir/registry.pid" "$dir/config.yml"; then state=running; else state=stopped; fi
        status_line "$name" "$state" "127.0.0.1:$(cat "$dir/port" 2>/dev/null || echo '?')"
    done
    if command -v pg_lsclusters >/dev/null && pg_running; then state=running; else state=stopped; fi
    status_line "postgresql" "$state" "$PG_VERSION/$PG_CLUSTER port $(pg_port 2>/dev/null || echo '?')"
    if [[ -f $D/env.sh ]]; then echo "env: source $D/env.sh"; fi
}

cmd_env() {
    [[ -f $D/env.sh ]] || die "not started: run $0 start"
    cat "$D/env.sh"
}

case ${1:-} in
    start) cmd_start ;;
    stop) shift; cmd_stop "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 start | stop [--all] | status | env" >&2; exit 2 ;;
esac
