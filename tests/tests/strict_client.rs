//! A snapshot with a 3 GiB layer (3 GiB uncompressed too), read through
//! the real API on Postgres by a strict client from PyPI (gql with
//! graphql-core, `tests/strict-client/read_snapshot.py`) that validates the
//! query against a schema file and parses every value of the answer with
//! that schema's scalar parsers.
//!
//! With `schema.graphql` the answer parses, to the exact numbers. With the
//! schema of release v0.1.0 (`Int`, 32 bits) it is refused: the answer of
//! today's API (the sizes are strings) and the answer v0.1.0 gave (the same
//! values as JSON numbers, as it wrote any i64) alike, the latter with
//! graphql-core's 32-bit message. So this test fails on the old schema.
//!
//! Needs the venv of `scripts/client-tools.sh` (run by `scripts/test.sh`);
//! without it the test fails and says so.

use std::path::PathBuf;
use std::process::{Command, Output};

use e2e_tests::stack::rows::{self, PushedSizes};
use e2e_tests::stack::{Api, ApiOptions, Database, int64};
use serde_json::{Value, json};

const THREE_GIB: i64 = 3 * 1024 * 1024 * 1024;

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's Python, where `scripts/client-tools.sh` puts it.
fn strict_python() -> PathBuf {
    let dir = match std::env::var("DCS_CLIENT_TOOLS_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(e2e_tests::required("DCS_ENV_DIR")).join("client-tools"),
    };
    let python = dir.join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: the strict-client test needs the venv with gql and graphql-core; \
         run `scripts/client-tools.sh` (scripts/test.sh does)",
        python.display()
    );
    python
}

/// Runs the strict client on snapshot `id` with the schema at `schema`.
fn read_strictly(api: &Api, token: &str, id: &str, schema: &str, numbers: bool) -> Output {
    let mut command = Command::new(strict_python());
    command
        .arg(repository_root().join("tests/strict-client/read_snapshot.py"))
        .arg("--schema")
        .arg(repository_root().join(schema))
        .args(["--url", &format!("{}/graphql", api.url)])
        .args(["--token", token, "--id", id]);
    if numbers {
        command.arg("--int64-as-numbers");
    }
    command.output().expect("run the strict client")
}

fn accepted(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "the strict client refused the answer:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the parsed snapshot, as JSON")
}

fn refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        output.status.code(),
        Some(1),
        "the strict client should refuse the answer (exit 1):\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

#[tokio::test]
async fn a_three_gib_layer_reaches_a_strict_client_exactly() {
    let db = Database::fresh();
    let api = Api::start(ApiOptions::postgres(&db, "registry.test", 600)).await;
    let alice = api.token("alice", "speaker", &["ws"]);
    let big = PushedSizes {
        layer_size: THREE_GIB,
        uncompressed_size: THREE_GIB,
        // 30 days of pause: a duration past 2^31 ms.
        paused_ms: 30 * 24 * 3_600_000,
        prepare_ms: 3_000_000_000,
        duration_ms: 4_000_000_000,
        bytes: THREE_GIB,
    };
    let id = rows::insert_pushed_snapshot(&db, "alice", big);

    // The raw answer: strings of digits, exact.
    let query = "query($id: ID!) { snapshot(id: $id) { layerSize uncompressedSize pausedMs \
        prepareMs durationMs progress { bytesDone bytesTotal } } }";
    let raw = api.data(&alice, query, json!({"id": id})).await["snapshot"].clone();
    assert_eq!(raw["layerSize"], "3221225472", "{raw}");
    assert_eq!(int64(&raw["progress"]["bytesTotal"]), THREE_GIB);

    // The strict client with today's schema: accepted, every value exact.
    let parsed = accepted(&read_strictly(&api, &alice, &id, "schema.graphql", false));
    let snapshot = &parsed["snapshot"];
    assert_eq!(snapshot["id"], id.as_str());
    assert_eq!(snapshot["layerSize"], json!(THREE_GIB));
    assert_eq!(snapshot["uncompressedSize"], json!(THREE_GIB));
    assert_eq!(snapshot["pausedMs"], json!(big.paused_ms));
    assert_eq!(snapshot["prepareMs"], json!(big.prepare_ms));
    assert_eq!(snapshot["durationMs"], json!(big.duration_ms));
    assert_eq!(snapshot["progress"]["bytesDone"], json!(THREE_GIB));
    assert_eq!(snapshot["progress"]["bytesTotal"], json!(THREE_GIB));

    // The schema of v0.1.0: the same client refuses today's answer ...
    let old = "releases/schema-v0.1.0.graphql";
    let why = refused(&read_strictly(&api, &alice, &id, old, false));
    assert!(why.contains("Int cannot represent"), "{why}");
    // ... and the answer v0.1.0 itself gave: numbers past 32 bits.
    let why = refused(&read_strictly(&api, &alice, &id, old, true));
    assert!(
        why.contains("Int cannot represent non 32-bit signed integer value: 3221225472"),
        "{why}"
    );
    // Today's schema does not take such numbers either: Int64 is a string.
    let why = refused(&read_strictly(&api, &alice, &id, "schema.graphql", true));
    assert!(why.contains("Int64 must be a string of digits"), "{why}");
}

/// The extremes of the range come through exactly too: a JSON number would
/// lose them in any client whose numbers are doubles (2^63 - 1 is not one).
#[tokio::test]
async fn the_largest_int64_is_exact_end_to_end() {
    let db = Database::fresh();
    let api = Api::start(ApiOptions::postgres(&db, "registry.test", 600)).await;
    let alice = api.token("alice", "speaker", &["ws"]);
    let id = rows::insert_pushed_snapshot(
        &db,
        "alice",
        PushedSizes {
            layer_size: i64::MAX,
            uncompressed_size: i64::MAX - 1,
            paused_ms: 0,
            prepare_ms: 0,
            duration_ms: 1,
            bytes: 0,
        },
    );
    let parsed = accepted(&read_strictly(&api, &alice, &id, "schema.graphql", false));
    // serde_json keeps 64-bit integers exact.
    assert_eq!(parsed["snapshot"]["layerSize"].as_i64(), Some(i64::MAX));
    assert_eq!(
        parsed["snapshot"]["uncompressedSize"].as_i64(),
        Some(i64::MAX - 1)
    );
}
