// Prints the breaking changes from one schema to another, one per line:
// the schema coordinate the change is at, a tab, and what changed.
// Used by scripts/check-schema.sh; the diff is @graphql-inspector/core,
// the engine of graphql-inspector's `diff` command, without the rule that
// command applies by default (simplifyChanges): on our own v0.1.0 schema
// that rule hid 7 of the 13 breaking changes (Snapshot.uncompressedSize
// among them), and every one of them needs its changelog line.
//
//   node breaking-changes.cjs OLD.graphql NEW.graphql
'use strict';

const { readFileSync } = require('node:fs');
const { buildSchema } = require('graphql');
const { diff, CriticalityLevel } = require('@graphql-inspector/core');

async function main() {
  const [oldPath, newPath] = process.argv.slice(2);
  if (!oldPath || !newPath) {
    throw new Error('usage: breaking-changes.cjs OLD.graphql NEW.graphql');
  }
  const load = (path) => buildSchema(readFileSync(path, 'utf8'));
  const changes = await diff(load(oldPath), load(newPath), []);
  for (const change of changes) {
    if (change.criticality.level === CriticalityLevel.Breaking) {
      // A change without a path (the schema's root types) is named by
      // its kind, so it still needs a line of its own in the changelog.
      process.stdout.write(`${change.path || change.type}\t${change.message}\n`);
    }
  }
}

main().catch((error) => {
  process.stderr.write(`breaking-changes: ${error.message}\n`);
  process.exit(2);
});
