#!/usr/bin/env bash
# The test command (README, CI): starts the real environment, checks
# formatting and lints, builds, and runs every test against real containerd,
# runc, registries and PostgreSQL. Fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."

# apt-get install, refreshing the package lists once if they are too old
# to have the package.
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; }
}

scripts/dev-env.sh start
# kubectl renders deploy/ for the manifest policy test (Debian: kubernetes-client).
command -v kubectl >/dev/null || apt_install kubernetes-client
command -v shellcheck >/dev/null || apt_install shellcheck
# A pinned cargo-deny, built once (6.5 minutes on two busy cores): asking for
# the version first keeps `cargo install` (and its index update) out of
# every later run.
CARGO_DENY_VERSION=0.20.2
if [[ $(cargo deny --version 2>/dev/null) != "cargo-deny $CARGO_DENY_VERSION" ]]; then
    cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi
# shellcheck disable=SC1091
source .dcs-env/env.sh
# The pinned tools that look at the API as clients do: the schema linter
# and diff (npm) and the strict GraphQL client's venv (PyPI), used by the
# schema check below and by tests/tests/strict_client.rs.
scripts/client-tools.sh >/dev/null

# Every shell script of scripts/, and CI's entry point. A deliberate
# exception is an inline `# shellcheck disable=SCnnnn` with its reason.
mapfile -t shell_scripts < <(find scripts -name '*.sh' | sort)
shellcheck "${shell_scripts[@]}" .ci/run
# The schema's hygiene (descriptions, naming, breaking changes listed in
# CHANGELOG.md), and proof that the check catches planted faults.
scripts/check-schema.sh
scripts/check-schema.sh --self-test
# Licences, banned or duplicate crates, sources: deny.toml. Not advisories:
# their database lives on a host these machines cannot reach.
cargo deny --locked check --hide-inclusion-graph licenses bans sources

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
