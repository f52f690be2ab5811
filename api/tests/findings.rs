//! Secret findings through the API on real PostgreSQL, with the agent
//! played by the test: acknowledgements checked, stored and sent with the
//! job; the reports of refused and pushed snapshots kept on their rows and
//! shown, their webhooks and event log carrying counts only; a big report
//! accepted in one event and stored bounded; and lists and lineage walks
//! that never read the report columns (PostgreSQL's column privileges are
//! the oracle: with SELECT on those columns revoked, anything that reads
//! them fails).

mod support;

use serde_json::{Value, json};
use support::{
    ALICE, Answer, App, BOB, CREATE, FakeAgent, desktop, error_code, error_message, pushed_event,
    webhook_endpoint,
};
use uuid::Uuid;

const SNAPSHOT: &str = "query($id: ID!) { snapshot(id: $id) {
    status failureCode failureReason
    findings { count secretCount warningCount truncated
               findings { path rule severity line size suggestedExclude } } } }";

/// A scan report as the agent sends it: two secrets and a warning.
fn report() -> Value {
    json!({"findings": [
        {"path": "/root/.aws/credentials", "rule": "aws-credentials-file",
         "severity": "SECRET", "line": null, "size": null, "suggestedExclude": null},
        {"path": "/root/.ssh/id_ed25519", "rule": "ssh-private-key-file",
         "severity": "SECRET", "line": 1, "size": null, "suggestedExclude": null},
        {"path": "/var/log/big.log", "rule": "huge-log", "severity": "WARNING",
         "line": null, "size": 11_534_336u64, "suggestedExclude": "/var/log/*"}
    ], "truncated": false})
}

/// The report's findings as GraphQL shows them: sizes are `Int64`, which
/// travels as a string of digits.
fn shown(report: Value) -> Value {
    let mut findings = report["findings"].clone();
    for finding in findings.as_array_mut().unwrap() {
        if let Some(size) = finding["size"].as_u64() {
            finding["size"] = json!(size.to_string());
        }
    }
    findings
}

fn failed(report: Value) -> Value {
    json!({"type": "FAILED", "code": "SECRETS_FOUND",
           "reason": "the scan found 2 secrets; acknowledge or exclude them", "findings": report})
}

fn pushed(manifest: &str, report: Value) -> Value {
    let mut event = pushed_event(manifest);
    event["findings"] = report;
    event
}

fn create_input(target: &str, acks: Value) -> Value {
    json!({"input": {"containerId": "desk-alice", "target": target, "acknowledgeFindings": acks}})
}

/// The API, alice's and bob's desktops, and NODE's agent played by `agent`.
async fn workshop(app: &App) -> FakeAgent {
    let agent = FakeAgent::start(app, Answer::error(404, "NOT_FOUND", "unused")).await;
    let containers = vec![
        desktop("desk-alice", "alice", "overlayfs"),
        desktop("desk-bob", "bob", "overlayfs"),
    ];
    app.register(&agent.url, agent.instance, containers).await;
    agent
}

/// Creates a snapshot of alice's desktop; waits until the agent has it.
async fn create(app: &App, agent: &FakeAgent, target: &str, acks: Value) -> Uuid {
    app.create_snapshot(agent, create_input(target, acks)["input"].clone())
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_are_checked_stored_and_sent_with_the_job() {
    let app = App::start().await;
    let agent = workshop(&app).await;
    let target = "registry.test/workshops/alice/desk:v1";

    let too_many: Vec<Value> = (0..1_001)
        .map(|i| json!({"rule": "netrc-file", "path": format!("/home/u{i}/.netrc")}))
        .collect();
    let hostile = [
        ("1,001 acknowledgements", json!(too_many), "at most 1000"),
        (
            "a 5,000-byte path",
            json!([{"rule": "netrc-file", "path": format!("/{}", "p".repeat(5_000))}]),
            "4096 bytes",
        ),
        (
            "a relative path",
            json!([{"rule": "netrc-file", "path": "root/.netrc"}]),
            "must be absolute",
        ),
        (
            "a rule that is no id",
            json!([{"rule": "netrc file; drop table", "path": "/root/.netrc"}]),
            "is not a rule id",
        ),
        ("an object for a list", json!({"rule": "x"}), ""),
    ];
    for (what, acks, sentence) in hostile {
        let body = app.graphql(ALICE, CREATE, create_input(target, acks)).await;
        assert_eq!(
            error_code(&body).as_deref(),
            Some("BAD_USER_INPUT"),
            "{what}: {body}"
        );
        assert!(error_message(&body).contains(sentence), "{what}: {body}");
    }
    // An invalid exclude glob, and a 10 KB container id, are refused too.
    let mut input = create_input(target, json!([]));
    input["input"]["excludes"] = json!(["/var/[log"]);
    let body = app.graphql(ALICE, CREATE, input).await;
    assert!(
        error_message(&body).contains("invalid exclude pattern"),
        "{body}"
    );
    let mut input = create_input(target, json!([]));
    input["input"]["containerId"] = json!("c".repeat(10 * 1024));
    let body = app.graphql(ALICE, CREATE, input).await;
    assert_eq!(
        error_code(&body).as_deref(),
        Some("BAD_USER_INPUT"),
        "{body}"
    );
    assert_eq!(app.db.query("SELECT count(*) FROM snapshots"), "0");
    assert!(agent.jobs().is_empty());

    // Checked, deduplicated, stored apart from the row, sent with the job.
    let acks = json!([
        {"rule": "ssh-private-key-file", "path": "/root/.ssh/id_ed25519"},
        {"rule": "aws-credentials-file", "path": "/root/.aws/credentials"},
        {"rule": "ssh-private-key-file", "path": "/root/.ssh/id_ed25519"}
    ]);
    let id = create(&app, &agent, target, acks).await;
    let job = agent.jobs().pop().unwrap();
    assert_eq!(job.snapshot_id, id);
    let sent: Vec<(String, String)> = job
        .acknowledged_findings
        .iter()
        .map(|a| (a.rule.clone(), a.path.clone()))
        .collect();
    assert_eq!(
        sent,
        [
            (
                "aws-credentials-file".to_string(),
                "/root/.aws/credentials".to_string()
            ),
            (
                "ssh-private-key-file".to_string(),
                "/root/.ssh/id_ed25519".to_string()
            ),
        ]
    );
    let stored = app.db.query(&format!(
        "SELECT json_array_length(acknowledged_findings) FROM snapshots WHERE id = '{id}'"
    ));
    assert_eq!(stored, "2");
    assert!(
        !app.db
            .query(&format!(
                "SELECT options::text FROM snapshots WHERE id = '{id}'"
            ))
            .contains("/root/"),
        "acknowledgements stay out of the options every list loads"
    );
    assert_eq!(agent.refused_tokens(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_pushed_snapshots_keep_their_findings_and_webhooks_carry_counts_only() {
    let app = App::start().await;
    let agent = workshop(&app).await;
    webhook_endpoint(&app).await;

    // Refused: FAILED with SECRETS_FOUND and the report.
    let refused = create(
        &app,
        &agent,
        "registry.test/workshops/alice/desk:v1",
        json!([]),
    )
    .await;
    let (status, answer) = app
        .event(refused, agent.instance, 1, json!({"type": "DIFFING"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = app
        .event(refused, agent.instance, 2, failed(report()))
        .await;
    assert_eq!(status, 200, "{answer}");
    let data = app.data(ALICE, SNAPSHOT, json!({"id": refused})).await;
    let snapshot = &data["snapshot"];
    assert_eq!(snapshot["status"], "FAILED");
    assert_eq!(snapshot["failureCode"], "SECRETS_FOUND");
    let findings = &snapshot["findings"];
    assert_eq!(
        [
            &findings["count"],
            &findings["secretCount"],
            &findings["warningCount"]
        ],
        [&json!(3), &json!(2), &json!(1)]
    );
    assert_eq!(findings["truncated"], false);
    assert_eq!(findings["findings"], shown(report()));
    // Not for bob: "not found", as any snapshot of someone else.
    let body = app.graphql(BOB, SNAPSHOT, json!({"id": refused})).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");

    // Pushed after acknowledging both: the report stays with the snapshot.
    let acks = json!([
        {"rule": "aws-credentials-file", "path": "/root/.aws/credentials"},
        {"rule": "ssh-private-key-file", "path": "/root/.ssh/id_ed25519"}
    ]);
    let pushed_id = create(&app, &agent, "registry.test/workshops/alice/desk:v2", acks).await;
    let (status, answer) = app
        .event(
            pushed_id,
            agent.instance,
            1,
            pushed(&format!("sha256:{:064x}", 1), report()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let data = app.data(ALICE, SNAPSHOT, json!({"id": pushed_id})).await;
    assert_eq!(data["snapshot"]["status"], "PUSHED");
    assert_eq!(data["snapshot"]["findings"]["secretCount"], 2);
    assert_eq!(data["snapshot"]["findings"]["findings"], shown(report()));

    // A snapshot that failed before any scan has no report: null, not 0.
    let unscanned = create(
        &app,
        &agent,
        "registry.test/workshops/alice/desk:v3",
        json!([]),
    )
    .await;
    let (status, answer) = app
        .event(
            unscanned,
            agent.instance,
            1,
            json!({"type": "FAILED", "code": "REGISTRY", "reason": "the registry is away"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let data = app.data(ALICE, SNAPSHOT, json!({"id": unscanned})).await;
    assert_eq!(data["snapshot"]["failureCode"], "REGISTRY");
    assert!(data["snapshot"]["findings"].is_null(), "{data}");

    // The webhooks: counts, never a path. The search first proves it sees
    // the paths where they are (the snapshots' report column).
    let paths = [
        "/root/.aws/credentials",
        "/root/.ssh/id_ed25519",
        "/var/log/big.log",
    ];
    let reports = app.db.query("SELECT findings::text FROM snapshots");
    for path in paths {
        assert!(reports.contains(path), "{path} not in {reports}");
    }
    let bodies: Vec<Value> = app
        .db
        .query("SELECT payload FROM webhook_deliveries ORDER BY created_at")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies[0]["type"], "snapshot.failed");
    assert_eq!(bodies[1]["type"], "snapshot.pushed");
    assert_eq!(bodies[2]["data"]["findingCount"], Value::Null);
    assert_eq!(bodies[2]["data"]["secretFindingCount"], Value::Null);
    for body in &bodies[..2] {
        assert_eq!(body["data"]["findingCount"], 3, "{body}");
        assert_eq!(body["data"]["secretFindingCount"], 2, "{body}");
        let text = body.to_string();
        for path in paths {
            assert!(!text.contains(path), "{path} in a webhook: {text}");
        }
    }
    // The event log keeps the counts, not the paths.
    let events = app
        .db
        .query("SELECT payload::text FROM snapshot_events ORDER BY id");
    let logged: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        logged
            .iter()
            .any(|e| e["code"] == "SECRETS_FOUND" && e["findings"]["secretFindingCount"] == 2),
        "{events}"
    );
    for path in paths {
        assert!(!events.contains(path), "{path} in the event log: {events}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_report_travels_in_one_event_and_is_stored_bounded() {
    let app = App::start().await;
    let agent = workshop(&app).await;
    let id = create(
        &app,
        &agent,
        "registry.test/workshops/alice/desk:v1",
        json!([]),
    )
    .await;

    // 1,500 findings of 4,000-byte paths: a 6 MB event, over the 1 MiB the
    // other endpoints take.
    let findings: Vec<Value> = (0..1_500)
        .map(|i| {
            json!({"path": format!("/data/{i:05}/{}", "p".repeat(3_988)),
                   "rule": "generic-assignment", "severity": "SECRET", "line": i + 1})
        })
        .collect();
    let big = failed(json!({"findings": findings, "truncated": false}));
    let event = json!({"snapshotId": id, "node": support::NODE, "instanceId": agent.instance,
        "seq": 1, "at": chrono::Utc::now(), "kind": big});
    let size = event.to_string().len();
    assert!(size > 6_000_000, "{size}");
    let (status, answer) = app
        .agent_post(dcs_protocol::api_paths::EVENTS, &event)
        .await;
    assert_eq!(status, 200, "{answer}");

    let data = app.data(ALICE, SNAPSHOT, json!({"id": id})).await;
    let report = &data["snapshot"]["findings"];
    assert_eq!(report["truncated"], true);
    let kept = report["count"].as_i64().unwrap();
    assert!((200..1_000).contains(&kept), "{kept}");
    assert_eq!(report["findings"].as_array().unwrap().len() as i64, kept);
    let stored: usize = app
        .db
        .query(&format!(
            "SELECT length(findings::text) FROM snapshots WHERE id = '{id}'"
        ))
        .parse()
        .unwrap();
    println!("a 6 MB report was stored as {stored} bytes ({kept} findings)");
    assert!(stored <= 1024 * 1024, "{stored}");

    // Over 32 MiB: refused before it is read; other endpoints keep 1 MiB.
    let answer = declared_body(&app, dcs_protocol::api_paths::EVENTS, 33 * 1024 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    let answer = declared_body(&app, dcs_protocol::api_paths::EVENTS, 32 * 1024 * 1024).await;
    assert!(
        !answer.starts_with("HTTP/1.1 413"),
        "32 MiB is within the limit: {answer}"
    );
    // Declared, not sent: the API answers 413 from the headers and closes
    // the connection, and a client still writing a 2 MiB body may see the
    // broken pipe before the answer.
    let answer = declared_body(&app, dcs_protocol::api_paths::HEARTBEAT, 2 * 1024 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
}

/// The API's answer to an agent's POST that declares a body of `length`
/// bytes and sends none of it: what the API decides from the headers.
async fn declared_body(app: &App, path: &str, length: usize) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = app.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        app.agent_token(support::NODE)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.shutdown().await.ok();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Columns of `snapshots` other than `hidden`, quoted for SQL.
fn columns_but(app: &App, hidden: &[&str]) -> String {
    app.db
        .query(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_name = 'snapshots' ORDER BY ordinal_position",
        )
        .lines()
        .filter(|c| !hidden.contains(c))
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// From now on the API's role may not read these columns of `snapshots`
/// (it owns the table, and an owner may revoke its own privileges).
fn hide_columns(app: &App, hidden: &[&str]) {
    let visible = columns_but(app, hidden);
    app.db.query(&format!(
        "REVOKE SELECT ON snapshots FROM CURRENT_USER; \
         GRANT SELECT ({visible}) ON snapshots TO CURRENT_USER"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_lineage_walks_and_status_changes_never_read_the_reports() {
    let app = App::start().await;
    let agent = workshop(&app).await;
    webhook_endpoint(&app).await;

    // The whole flow with the report column unreadable: create (with
    // acknowledgements), dispatch, events that write the report, webhooks.
    hide_columns(&app, &["findings"]);
    let acks = json!([{"rule": "aws-credentials-file", "path": "/root/.aws/credentials"}]);
    let first = create(
        &app,
        &agent,
        "registry.test/workshops/alice/desk:v1",
        acks.clone(),
    )
    .await;
    let manifest = format!("sha256:{:064x}", 7);
    for (seq, kind) in [
        (1, json!({"type": "DIFFING"})),
        (
            2,
            json!({"type": "PUSHING", "bytesDone": 1, "bytesTotal": 2}),
        ),
        (3, pushed(&manifest, report())),
    ] {
        let (status, answer) = app.event(first, agent.instance, seq, kind).await;
        assert_eq!(status, 200, "{answer}");
    }
    // The desktop now runs that image: the next snapshot is its child.
    let mut running = desktop("desk-alice", "alice", "overlayfs");
    running["imageDigest"] = json!(manifest);
    app.inventory(
        agent.instance,
        vec![running, desktop("desk-bob", "bob", "overlayfs")],
    )
    .await;
    let second = create(&app, &agent, "registry.test/workshops/alice/desk:v2", acks).await;
    let (status, answer) = app.event(second, agent.instance, 1, failed(report())).await;
    assert_eq!(status, 200, "{answer}");

    // Reads with neither JSON column readable.
    hide_columns(&app, &["findings", "acknowledged_findings"]);
    let list = app
        .data(
            ALICE,
            "{ snapshots(first: 10) { edges { node { id status
                findings { count secretCount warningCount }
                parent { id } children { id }
                ancestors(first: 5) { id } descendants(first: 5) { id } } } } }",
            json!({}),
        )
        .await;
    let edges = list["snapshots"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{list}");
    assert_eq!(edges[0]["node"]["id"], second.to_string());
    assert_eq!(edges[0]["node"]["status"], "FAILED");
    assert_eq!(edges[0]["node"]["parent"]["id"], first.to_string());
    assert_eq!(edges[0]["node"]["ancestors"][0]["id"], first.to_string());
    assert_eq!(edges[1]["node"]["descendants"][0]["id"], second.to_string());
    assert_eq!(edges[1]["node"]["children"][0]["id"], second.to_string());
    for edge in edges {
        assert_eq!(edge["node"]["findings"]["secretCount"], 2, "{edge}");
    }
    let one = app
        .data(
            ALICE,
            "query($id: ID!) { snapshot(id: $id) { failureCode findings { count } } }",
            json!({"id": second}),
        )
        .await;
    assert_eq!(one["snapshot"]["failureCode"], "SECRETS_FOUND");

    // The oracle: what does read the report fails now...
    let body = app
        .graphql(
            ALICE,
            "query($id: ID!) { snapshot(id: $id) { findings { findings { path } } } }",
            json!({"id": second}),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("INTERNAL"), "{body}");
    // ... and works again once the column may be read.
    app.db.query("GRANT SELECT ON snapshots TO CURRENT_USER");
    let data = app.data(ALICE, SNAPSHOT, json!({"id": second})).await;
    assert_eq!(data["snapshot"]["findings"]["findings"], shown(report()));
}
