#!/usr/bin/env bash
# Installs the pinned tools that look at the API from a client's side:
#   - the schema linter and breaking-change diff of scripts/check-schema.sh
#     (npm: scripts/schema-tools/package.json and its package-lock.json);
#   - a Python venv with the strict GraphQL client of
#     tests/tests/strict_client.rs (PyPI: tests/strict-client/requirements.txt).
# Into ${DCS_CLIENT_TOOLS_DIR:-${DCS_ENV_DIR:-<repo>/.dcs-env}/client-tools}:
# npm/node_modules and venv/. Installs Debian's nodejs, npm and python3-venv
# when missing. Idempotent: each part is installed again only when its pin
# files changed (a stamp holds their SHA-256), so a second run takes well
# under a second.
#
#   scripts/client-tools.sh          install what is missing, print the directory
set -euo pipefail
cd "$(dirname "$0")/.."

repo=$(pwd)
dir=$(realpath -m "${DCS_CLIENT_TOOLS_DIR:-${DCS_ENV_DIR:-$repo/.dcs-env}/client-tools}")
npm_pins=(scripts/schema-tools/package.json scripts/schema-tools/package-lock.json)
python_pins=(tests/strict-client/requirements.txt)

# apt-get install, refreshing the package lists once if they are too old
# to have the package.
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; }
}

# The SHA-256 of the pin files: what a stamp records.
pins_hash() {
    sha256sum "$@" | sha256sum | cut -d' ' -f1
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
command -v python3 >/dev/null || apt_install python3
# Debian's python3 has no venv module without python3-venv.
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

mkdir -p "$dir"

npm_hash=$(pins_hash "${npm_pins[@]}")
if [[ $(cat "$dir/npm.stamp" 2>/dev/null) != "$npm_hash" ]]; then
    rm -rf "$dir/npm" "$dir/npm.stamp"
    mkdir -p "$dir/npm"
    cp "${npm_pins[@]}" "$dir/npm/"
    # `npm ci` installs exactly the lock file, or fails.
    (cd "$dir/npm" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$npm_hash" >"$dir/npm.stamp"
fi

python_hash=$(pins_hash "${python_pins[@]}")
if [[ $(cat "$dir/venv.stamp" 2>/dev/null) != "$python_hash" ]]; then
    rm -rf "$dir/venv" "$dir/venv.stamp"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --disable-pip-version-check -q -r "${python_pins[0]}"
    "$dir/venv/bin/pip" check >/dev/null
    echo "$python_hash" >"$dir/venv.stamp"
fi

echo "$dir"
