#!/usr/bin/env bash
# The schema hygiene check (run by scripts/test.sh):
#   1. lint: every type, field and input field has a description; types
#      are PascalCase, fields, input fields and arguments camelCase, enum
#      values UPPER_CASE (graphql-schema-linter, plus our rules in
#      scripts/schema-tools/rules/naming.js);
#   2. breaking changes: each one from the last release's schema
#      (releases/schema-vX.Y.Z.graphql, the highest version) to
#      schema.graphql must be listed by its schema coordinate, in
#      backquotes (`Snapshot.layerSize`), under `## Unreleased` in
#      CHANGELOG.md (the diff is @graphql-inspector/core);
#   3. when the release's git tag is present, its schema.graphql is the
#      committed release file (CI clones may lack tags: then the file alone
#      counts).
# The tools are pinned and installed by scripts/client-tools.sh.
#
#   scripts/check-schema.sh                  check this checkout
#   scripts/check-schema.sh --self-test      plant faults in a temporary copy; each must fail the check
#   scripts/check-schema.sh --schema F --changelog F --releases DIR   check other files
set -euo pipefail
cd "$(dirname "$0")/.."

schema=schema.graphql
changelog=CHANGELOG.md
releases=releases
self_test=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --schema) schema=$2 && shift 2 ;;
    --changelog) changelog=$2 && shift 2 ;;
    --releases) releases=$2 && shift 2 ;;
    --self-test) self_test=1 && shift ;;
    *) echo "check-schema: unknown argument $1" >&2 && exit 2 ;;
    esac
done

tools=$(scripts/client-tools.sh | tail -n 1)
node_modules=$tools/npm/node_modules
[[ -x $node_modules/.bin/graphql-schema-linter ]] ||
    { echo "check-schema: the linter is missing from $node_modules" >&2 && exit 2; }

LINT_RULES=(
    types-have-descriptions
    fields-have-descriptions
    input-object-values-have-descriptions
    types-are-pascal-cased
    fields-are-camel-cased
    input-object-values-are-camel-cased
    arguments-are-camel-cased
    enum-values-all-caps
)

# Prints what is wrong with $1 (schema), $2 (changelog), $3 (releases
# directory); fails if anything is.
check() {
    local schema=$1 changelog=$2 releases=$3 failed=0
    local rules
    rules=$(
        IFS=,
        echo "${LINT_RULES[*]}"
    )
    if ! NODE_PATH=$node_modules "$node_modules/.bin/graphql-schema-linter" --format compact \
        --custom-rule-paths "$PWD/scripts/schema-tools/rules/*.js" --rules "$rules" "$schema"; then
        echo "check-schema: $schema breaks the lint rules above" >&2
        failed=1
    fi

    local release
    release=$(find "$releases" -maxdepth 1 -name 'schema-v*.graphql' | sort -V | tail -n 1)
    if [[ -z $release ]]; then
        echo "check-schema: no release schema in $releases/" >&2
        return 1
    fi
    local breaking
    if ! breaking=$(NODE_PATH=$node_modules node scripts/schema-tools/breaking-changes.cjs "$release" "$schema"); then
        echo "check-schema: the diff of $release and $schema failed" >&2
        return 1
    fi
    # The lines under `## Unreleased`, up to the next `## ` heading.
    local unreleased
    unreleased=$(awk '/^## /{inside = ($0 ~ /^## Unreleased[[:space:]]*$/); next} inside' "$changelog" 2>/dev/null || true)
    local coordinate message missing=0
    while IFS=$'\t' read -r coordinate message; do
        [[ -n $coordinate ]] || continue
        if ! grep -qF -- "\`$coordinate\`" <<<"$unreleased"; then
            echo "check-schema: breaking change not in $changelog under '## Unreleased': \`$coordinate\`: $message" >&2
            missing=1
        fi
    done <<<"$breaking"
    if [[ $missing == 1 ]]; then
        failed=1
    else
        echo "check-schema: $(grep -c . <<<"$breaking" || true) breaking change(s) since $(basename "$release"), each in $changelog"
    fi

    local version tag_schema
    version=$(basename "$release" .graphql)
    version=${version#schema-}
    if tag_schema=$(git show "$version:schema.graphql" 2>/dev/null); then
        if [[ $tag_schema != "$(cat "$release")" ]]; then
            echo "check-schema: $release differs from schema.graphql of the tag $version" >&2
            failed=1
        fi
    else
        echo "check-schema: no git tag $version here; $release alone is the release's schema"
    fi
    return "$failed"
}

if [[ $self_test == 0 ]]; then
    check "$schema" "$changelog" "$releases"
    echo "check-schema: $schema is clean"
    exit 0
fi

# --self-test: a copy of the real files passes; each planted fault fails.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
copy() {
    rm -rf "$work/case" && mkdir -p "$work/case"
    cp "$schema" "$work/case/schema.graphql"
    cp "$changelog" "$work/case/CHANGELOG.md"
    cp -r "$releases" "$work/case/releases"
}
run_case() {
    check "$work/case/schema.graphql" "$work/case/CHANGELOG.md" "$work/case/releases" \
        >"$work/out" 2>&1
}
expect_failure() {
    local what=$1 needle=$2
    if run_case; then
        cat "$work/out" >&2
        echo "check-schema --self-test: $what was NOT caught" >&2
        exit 1
    fi
    if ! grep -qF -- "$needle" "$work/out"; then
        cat "$work/out" >&2
        echo "check-schema --self-test: $what failed the check, but without naming '$needle'" >&2
        exit 1
    fi
    echo "check-schema --self-test: $what is caught ($needle)"
}

copy
if ! run_case; then
    cat "$work/out" >&2
    echo "check-schema --self-test: the unchanged copy fails; fix that first" >&2
    exit 1
fi
echo "check-schema --self-test: the unchanged copy passes"

# A breaking change: a field's type changed, not in the changelog.
copy
sed -i 's/^\tconfigDigest: String$/\tconfigDigest: Int/' "$work/case/schema.graphql"
expect_failure "a planted breaking change" "\`Snapshot.configDigest\`"

# The same change with its changelog entry passes the diff part.
awk '{print} /^## Unreleased/{print "\n- `Snapshot.configDigest` is an Int (planted)."}' \
    "$work/case/CHANGELOG.md" >"$work/changelog" && mv "$work/changelog" "$work/case/CHANGELOG.md"
if ! run_case; then
    cat "$work/out" >&2
    echo "check-schema --self-test: a breaking change listed in the changelog still fails" >&2
    exit 1
fi
echo "check-schema --self-test: the same change listed under '## Unreleased' passes"

# A field without a description.
copy
sed -i 's/^type Me {$/type Me {\n\tplantedField: String/' "$work/case/schema.graphql"
expect_failure "a planted field without a description" 'Me.plantedField'

# A type that is not PascalCase.
copy
printf '"""\nPlanted.\n"""\nscalar planted_scalar\n' >>"$work/case/schema.graphql"
expect_failure "a planted snake_case type" 'planted_scalar'

# An enum value that is not UPPER_CASE.
copy
sed -i 's/^\tQUEUED$/\tQUEUED\n\tplantedValue/' "$work/case/schema.graphql"
expect_failure "a planted lower-case enum value" 'plantedValue'

echo "check-schema --self-test: passed"
