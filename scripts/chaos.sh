#!/usr/bin/env bash
# The chaos harness on the real stack: snapshot flows while the two API
# replicas, the agent and Postgres are killed and restarted at seeded random
# moments; the invariants are checked after every round.
#
#   scripts/chaos.sh [--crash-points N] [--seed S] [--self-test] [--per-round N]
#                    [--desktops N] [--bound-seconds S] [--probe N] [--cancel-chance P]
#
# Defaults: 25 crash points (10 with --self-test), a seed from the clock
# (printed; pass it back with --seed to replay the same schedule).
# 1,000 crash points: scripts/chaos.sh --crash-points 1000 --per-round 50
#
# --self-test runs the API with DCS_TEST_UNGUARDED_TRANSITIONS=1 (its status
# guards off) and succeeds only if the checker reports a violation.
#
# Postgres for the run is a private server (own data directory and port,
# started as the postgres user), so killing it never disturbs the shared
# one other tests use. Logs of every process stay in /tmp/dcs-chaos-*.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/dev-env.sh start
# shellcheck disable=SC1091
source .dcs-env/env.sh

cargo build --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/chaos" "$@"
