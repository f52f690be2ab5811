#!/usr/bin/env bash
# The main job, locally: the whole stack with its working defaults.
#
# Starts containerd, runc and a registry (scripts/dev-env.sh), the API on
# its embedded SQLite default, and one node agent; starts a "desktop" pod as
# CRI would (a sandbox container carrying the pod's labels, owner included,
# and the desktop container tied to it); takes a first snapshot through
# GraphQL to show it works; then prints a sample token and request and keeps
# the stack running until Ctrl-C (DCS_DETACH=1 leaves it running instead).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/dev-env.sh start
# shellcheck disable=SC1091
source .dcs-env/env.sh
cargo build --release --locked --bins
bin=$root/target/release

local_dir=$DCS_ENV_DIR/local
mkdir -p "$local_dir"
api_port=${DCS_API_PORT:-8080}
agent_port=${DCS_AGENT_PORT:-9443}
api_url=http://127.0.0.1:$api_port
namespace=k8s.io
data_dir=$local_dir/api-data
prefix="$DCS_REGISTRY/workshops/{sub}"
# The speaker the desktop belongs to, and whose token is printed below.
speaker=alice

stop_stack() {
  for name in agent api; do
    if [ -f "$local_dir/$name.pid" ]; then
      kill "$(cat "$local_dir/$name.pid")" 2>/dev/null || true
      rm -f "$local_dir/$name.pid"
    fi
  done
}
stop_stack

echo "== API on $api_url (SQLite in $data_dir)"
# The embedded SQLite default: no DATABASE_URL (dev-env exports one for the tests).
setsid -f env -u DATABASE_URL "$bin/dcs-api" --data-dir "$data_dir" --listen "127.0.0.1:$api_port" \
  --speaker-repository-prefix "$prefix" --insecure-registry "$DCS_REGISTRY" >"$local_dir/api.log" 2>&1
sleep 0.2
pgrep -n -f "dcs-api --data-dir $data_dir" >"$local_dir/api.pid"
for _ in $(seq 1 100); do
  exec 3<>"/dev/tcp/127.0.0.1/$api_port" 2>/dev/null && { exec 3<&-; break; }
  sleep 0.1
done

echo "== Agent for node 'local' (containerd namespace $namespace)"
setsid -f "$bin/dcs-agent" serve --containerd-socket "$DCS_CONTAINERD_SOCKET" \
  --namespace "$namespace" --node-name local --listen "127.0.0.1:$agent_port" \
  --api-url "$api_url" --shared-secret-file "$data_dir/agent-secret" \
  --insecure-registry "$DCS_REGISTRY" --state-dir "$local_dir/agent-state" \
  >"$local_dir/agent.log" 2>&1
sleep 0.2
pgrep -n -f "dcs-agent serve --containerd-socket $DCS_CONTAINERD_SOCKET --namespace $namespace --node-name local" >"$local_dir/agent.pid"

echo "== A desktop pod workshop/desktop-0 owned by $speaker, as CRI would start it"
ctr=(ctr --address "$DCS_CONTAINERD_SOCKET" --namespace "$namespace")
image=localhost/dcs-demo/busybox:1
scripts/make-test-image.sh "$local_dir/busybox.tar" "$image" >/dev/null
"${ctr[@]}" images import --snapshotter overlayfs "$local_dir/busybox.tar" >/dev/null
for old in desktop-0 desktop-0-sandbox; do
  "${ctr[@]}" tasks kill -s SIGKILL "$old" >/dev/null 2>&1 || true
done
sleep 0.3
for old in desktop-0 desktop-0-sandbox; do
  "${ctr[@]}" tasks rm -f "$old" >/dev/null 2>&1 || true
  "${ctr[@]}" containers rm "$old" >/dev/null 2>&1 || true
done
# The pod's owner is read from its sandbox, the container CRI labels
# io.cri-containerd.kind=sandbox and gives the pod's labels; never from the
# desktop container itself, whose labels start as a copy of its image's.
pod_uid=$(cat /proc/sys/kernel/random/uuid)
pod_labels=(--label "io.kubernetes.pod.uid=$pod_uid" --label io.kubernetes.pod.name=desktop-0
  --label io.kubernetes.pod.namespace=workshop)
"${ctr[@]}" containers create --snapshotter overlayfs --label io.cri-containerd.kind=sandbox \
  "${pod_labels[@]}" --label "dcs.io/owner=$speaker" "$image" desktop-0-sandbox
"${ctr[@]}" run -d --snapshotter overlayfs --label io.cri-containerd.kind=container \
  "${pod_labels[@]}" --label io.kubernetes.container.name=desktop "$image" desktop-0 sleep infinity
"${ctr[@]}" tasks exec --exec-id setup desktop-0 sh -c \
  'echo "welcome to the workshop" > /etc/motd; mkdir -p /opt/workshop; echo "kubectl get pods -A" > /opt/workshop/step-1.txt'

token=$(env -u DATABASE_URL "$bin/dcs-api" --data-dir "$data_dir" token --sub "$speaker" --role speaker --namespaces workshop)
graphql() {
  local body=$1
  # shellcheck disable=SC2016
  python3 - "$api_url/graphql" "$token" "$body" <<'PY'
import json, sys, urllib.request
url, token, body = sys.argv[1:4]
req = urllib.request.Request(url, data=body.encode(), headers={
    "content-type": "application/json", "authorization": "Bearer " + token})
print(urllib.request.urlopen(req).read().decode())
PY
}

echo "== Waiting for the agent's inventory"
for _ in $(seq 1 50); do
  graphql '{"query":"{ containers { edges { node { id } } } }"}' | grep -q desktop-0 && break
  sleep 0.2
done

target="$DCS_REGISTRY/workshops/$speaker/desktop:v1"
# shellcheck disable=SC2016 # $input is the GraphQL variable, not the shell's
request=$(printf '{"query":"mutation($input: CreateSnapshotInput!) { createSnapshot(input: $input) { id status } }","variables":{"input":{"podNamespace":"workshop","podName":"desktop-0","containerName":"desktop","target":"%s","message":"first snapshot","changes":["CMD [\\"cat\\", \\"/etc/motd\\"]"]}}}' "$target")
echo "== First snapshot"
created=$(graphql "$request")
echo "$created"
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["createSnapshot"]["id"])' <<<"$created")
for _ in $(seq 1 100); do
  result=$(graphql "{\"query\":\"{ snapshot(id: \\\"$id\\\") { status manifestDigest pausedMs durationMs failureReason } }\"}")
  grep -qE '"(PUSHED|FAILED)"' <<<"$result" && break
  sleep 0.2
done
echo "$result"

cat <<EOF2

The stack is running:
  API      $api_url/graphql  (GraphiQL in a browser; log: $local_dir/api.log)
  agent    node "local", containerd namespace $namespace (log: $local_dir/agent.log)
  registry $DCS_REGISTRY

The speaker console, signed in as $speaker (the token is in the fragment, which
the browser never sends to the server):
  $api_url/console/#token=$token

A token of the desktop's owner ($speaker, namespace "workshop"):
  export TOKEN=$token

Take a snapshot:
  curl -s $api_url/graphql -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d '{"query":"mutation { createSnapshot(input: {podNamespace: \"workshop\", podName: \"desktop-0\", target: \"$DCS_REGISTRY/workshops/$speaker/desktop:v2\"}) { id status } }"}'

Follow it (WebSocket, graphql-transport-ws): subscription { snapshotEvents { snapshotId status bytesDone bytesTotal } }
Mint other tokens: $bin/dcs-api --data-dir $data_dir token --sub bob --role speaker --namespaces workshop
  (bob shares the namespace but not the desktop: he sees neither it nor its snapshots,
  unless the API runs with --access-scope namespace)
EOF2

if [ "${DCS_DETACH:-0}" = 1 ]; then
  echo "Left running (DCS_DETACH=1). Stop with: kill \$(cat $local_dir/api.pid $local_dir/agent.pid)"
  exit 0
fi
trap 'echo; echo "stopping API and agent"; stop_stack' INT TERM EXIT
echo "Ctrl-C stops the API and the agent."
while kill -0 "$(cat "$local_dir/api.pid")" 2>/dev/null; do sleep 1; done
