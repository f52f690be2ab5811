"""Reads one snapshot through the API as a strict GraphQL client would.

gql (with graphql-core) validates the query against a schema file before it
is sent, and parses every value of the result with that schema's scalar
parsers: `Int` refuses what does not fit 32 bits, `Int64` is parsed by the
rule its description gives. Prints the parsed snapshot as JSON and exits 0,
or prints why the result was refused and exits 1.

    read_snapshot.py --schema FILE --url URL --token TOKEN --id ID [--int64-as-numbers]

`--int64-as-numbers` turns every `Int64` string of the answer back into the
JSON number release v0.1.0 sent for that field (it declared them `Int` and
wrote any i64 as a number), to show what a strict client made of that.
Run by tests/tests/strict_client.rs with the venv of scripts/client-tools.sh.
"""

import argparse
import json
import sys

from gql import Client, gql
from gql.transport.requests import RequestsHTTPTransport
from gql.utilities import parse_result, update_schema_scalar
from graphql import GraphQLError, GraphQLScalarType, build_schema

QUERY = """
query ($id: ID!) {
  snapshot(id: $id) {
    id
    layerSize
    uncompressedSize
    pausedMs
    prepareMs
    durationMs
    progress { bytesDone bytesTotal }
  }
}
"""

# The fields of QUERY that the current schema declares `Int64`.
INT64_FIELDS = ("layerSize", "uncompressedSize", "pausedMs", "prepareMs", "durationMs")
INT64_PROGRESS_FIELDS = ("bytesDone", "bytesTotal")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def parse_int64(value):
    """`Int64` as its description says: a string of decimal digits with an
    optional `-`, within the signed 64-bit range; nothing else."""
    if not isinstance(value, str):
        raise GraphQLError(f"Int64 must be a string of digits: {value!r}")
    digits = value[1:] if value.startswith("-") else value
    if not digits or not all("0" <= c <= "9" for c in digits):
        raise GraphQLError(f"Int64 is not decimal digits: {value!r}")
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise GraphQLError(f"Int64 out of range: {value!r}")
    return number


def serialize_int64(value):
    return str(parse_int64(str(value)))


INT64 = GraphQLScalarType(name="Int64", serialize=serialize_int64, parse_value=parse_int64)


def as_numbers(snapshot):
    """The answer as v0.1.0 wrote these fields: JSON numbers."""
    for field in INT64_FIELDS:
        if isinstance(snapshot.get(field), str):
            snapshot[field] = int(snapshot[field])
    progress = snapshot.get("progress") or {}
    for field in INT64_PROGRESS_FIELDS:
        if isinstance(progress.get(field), str):
            progress[field] = int(progress[field])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--int64-as-numbers", action="store_true")
    args = parser.parse_args()

    with open(args.schema, encoding="utf-8") as f:
        schema = build_schema(f.read())
    if "Int64" in schema.type_map:
        update_schema_scalar(schema, "Int64", INT64)

    transport = RequestsHTTPTransport(
        url=args.url,
        headers={"Authorization": f"Bearer {args.token}"},
        timeout=30,
    )
    document = gql(QUERY)
    with Client(schema=schema, transport=transport) as session:
        # Validated against the schema before it is sent; parsed below, so
        # that the raw answer can be shown when it is refused.
        raw = session.execute(document, variable_values={"id": args.id}, parse_result=False)
    if args.int64_as_numbers:
        as_numbers(raw["snapshot"])
    try:
        parsed = parse_result(schema, document.document, raw)
    except GraphQLError as error:
        print(f"refused by the schema: {error.message}", file=sys.stderr)
        print(f"raw answer: {json.dumps(raw)}", file=sys.stderr)
        return 1
    print(json.dumps(parsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
