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
cargo test --workspace --locked --no-fail-fast -- --test-threads "${DCS_TEST_THREADS:-4}"
