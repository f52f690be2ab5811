#!/usr/bin/env bash
# The main job, locally: starts containerd, runc and a registry, runs a
# "desktop" container, changes it by hand (as a speaker would), commits it
# with dcs-agent, then pulls the new image by digest into a fresh namespace
# and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/dev-env.sh start
# shellcheck disable=SC1091
source .dcs-env/env.sh
cargo build --release --locked -p node-agent
agent=target/release/dcs-agent

namespace=demo
ctr=(ctr --address "$DCS_CONTAINERD_SOCKET" --namespace "$namespace")
image=localhost/dcs-demo/busybox:1
scripts/make-test-image.sh /tmp/dcs-demo-busybox.tar "$image" >/dev/null
"${ctr[@]}" images import --snapshotter overlayfs /tmp/dcs-demo-busybox.tar >/dev/null

# A fresh desktop container with the labels kubelet would set.
"${ctr[@]}" tasks kill -s SIGKILL desktop >/dev/null 2>&1 || true
sleep 0.3
"${ctr[@]}" tasks rm -f desktop >/dev/null 2>&1 || true
"${ctr[@]}" containers rm desktop >/dev/null 2>&1 || true
"${ctr[@]}" run -d --snapshotter overlayfs \
  --label io.kubernetes.pod.name=desktop-0 \
  --label io.kubernetes.pod.namespace=workshop \
  --label io.kubernetes.container.name=desktop \
  "$image" desktop sleep 100000

echo "== The speaker sets up their tools inside the desktop"
"${ctr[@]}" tasks exec --exec-id setup desktop sh -c '
  mkdir -p /opt/workshop && echo "kubectl get pods -A" > /opt/workshop/first-step.txt
  echo "welcome to the workshop" > /etc/motd
  echo "scratch" > /tmp/not-kept'

echo "== Containers on this node"
"$agent" containers --containerd-socket "$DCS_CONTAINERD_SOCKET" --namespace "$namespace"

echo "== One command turns the changes into an image in the registry"
target="$DCS_REGISTRY/workshop/desktop:v1"
result=$("$agent" commit --containerd-socket "$DCS_CONTAINERD_SOCKET" --namespace "$namespace" \
  --container desktop --target "$target" --insecure-registry "$DCS_REGISTRY" \
  --compression zstd --state-dir "$DCS_ENV_DIR/agent-state" \
  --change 'CMD ["cat", "/etc/motd", "/opt/workshop/first-step.txt"]' \
  --message "demo snapshot")
echo "$result"
digest=$(sed -n 's/.*"manifestDigest": "\(sha256:[0-9a-f]*\)".*/\1/p' <<<"$result")

echo "== Pulled by digest into a fresh namespace and run"
fresh=(ctr --address "$DCS_CONTAINERD_SOCKET" --namespace demo-fresh)
"${fresh[@]}" images pull --plain-http "$DCS_REGISTRY/workshop/desktop@$digest" >/dev/null
"${fresh[@]}" run --rm "$DCS_REGISTRY/workshop/desktop@$digest" "run-$$"
echo "== /tmp was not kept:"
"${fresh[@]}" run --rm "$DCS_REGISTRY/workshop/desktop@$digest" "ls-$$" ls -A /tmp
echo "Done. The image is $target ($digest)."
