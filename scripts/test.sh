#!/usr/bin/env bash
# The test command (README, CI): starts the real environment, checks
# formatting and lints, builds, and runs every test against real containerd,
# runc, registries and PostgreSQL. Fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/dev-env.sh start
# kubectl renders deploy/ for the manifest policy test (Debian: kubernetes-client).
command -v kubectl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubernetes-client
# shellcheck disable=SC1091
source .dcs-env/env.sh

# The toolchain pinned in rust-toolchain.toml; rustup fetches it if needed.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests run the real binaries.
cargo build --workspace --bins --locked
# Tests that race a timer against the machine's speed run alone afterwards:
# beside three other tests on two cores their margins (a 1 s claim margin
# after a 2 s webhook timeout) measure the load, not the code.
ALONE=(deliveries_waiting_for_a_send_slot_are_not_sent_twice)
skip=()
for name in "${ALONE[@]}"; do skip+=(--skip "$name"); done
status=0
cargo test --workspace --locked --no-fail-fast -- --test-threads "${DCS_TEST_THREADS:-4}" "${skip[@]}" || status=$?
for name in "${ALONE[@]}"; do
    cargo test -p e2e-tests --locked --test webhooks -- --exact "$name" || status=$?
done
exit "$status"
