#!/usr/bin/env bash
# Crash-durability stress for outbound webhooks: the kill -9 loop of
# `deliveries_survive_api_crashes` (tests/tests/webhooks.rs), N rounds instead of the
# test suite's 50.
#
#   source .dcs-env/env.sh && scripts/stress-webhooks.sh [N]      # N defaults to 500
#
# Each round queues a ping (sendTestWebhook) and SIGKILLs the API at a random point:
# right after the commit, 0-10 ms or 10-200 ms later, when the receiver has the request
# but has not answered, or right after the receiver's 2xx and before the API records it;
# then restarts the API on the same Postgres database (--webhook-claim-seconds 2,
# --webhook-timeout-seconds 1). At the end every committed delivery must have been
# answered 2xx (no loss), duplicates must carry the same webhook-id, and the duplicate
# rate is printed.
#
# Environment: REPEAT (default 1) runs the whole loop that many times.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${DATABASE_URL:-} ]]; then
    # shellcheck disable=SC1091
    source "${DCS_ENV_DIR:-$ROOT/.dcs-env}/env.sh"
fi
N=${1:-${WEBHOOK_CRASH_ITERATIONS:-500}}
REPEAT=${REPEAT:-1}
cd "$ROOT"
cargo build --bins
for run in $(seq "$REPEAT"); do
    echo "== stress run $run of $REPEAT: $N kill -9 rounds"
    log=$(mktemp /tmp/stress-webhooks.XXXXXX)
    status=0
    WEBHOOK_CRASH_ITERATIONS=$N cargo test -p e2e-tests --test webhooks \
        deliveries_survive_api_crashes -- --exact --nocapture >"$log" 2>&1 || status=$?
    grep -E '^crash|^test |panicked|lost|FAILED' "$log" || true
    if [[ $status -ne 0 ]]; then
        echo "stress run $run FAILED; full output in $log" >&2
        exit 1
    fi
    rm -f "$log"
done
