//! `previewSnapshot` against a fake agent on real PostgreSQL: the answer
//! reaches the speaker whole; each refusal of the agent reaches them with
//! its code; an answer over the cap, a slow agent and a crowd of previews
//! are cut off by the API's own bounds; hostile input and other speakers'
//! desktops are refused before any agent is asked.

mod support;

use std::time::{Duration, Instant};

use api::agents::PreviewLimits;
use serde_json::{Value, json};
use support::{
    ADMIN, ALICE, Answer, App, BOB, FakeAgent, NAMESPACE, desktop, error_code, error_message,
};

const PREVIEW: &str = "query($input: PreviewSnapshotInput!) { previewSnapshot(input: $input) {
    files directories whiteouts links other totalBytes
    biggestFiles { path bytes } biggestDirectories { path bytes }
    excluded { pattern entries files bytes }
    findings { count secretCount warningCount truncated
               findings { path rule severity line size suggestedExclude } } } }";

/// An agent's preview: two secrets and a warning.
fn agent_preview() -> Value {
    json!({
        "files": 12, "directories": 4, "whiteouts": 1, "links": 2, "other": 0,
        "totalBytes": 11_534_400u64,
        "biggestFiles": [{"path": "/var/log/big.log", "bytes": 11_534_336u64}],
        "biggestDirectories": [{"path": "/var/log", "bytes": 11_534_336u64}],
        "excluded": [
            {"pattern": "/tmp/*", "entries": 1, "files": 1, "bytes": 10},
            {"pattern": "/home/*/.cache", "entries": 0, "files": 0, "bytes": 0}
        ],
        "findings": {"findings": [
            {"path": "/root/.aws/credentials", "rule": "aws-credentials-file",
             "severity": "SECRET", "line": null, "size": null, "suggestedExclude": null},
            {"path": "/root/.env", "rule": "github-token", "severity": "SECRET",
             "line": 3, "size": null, "suggestedExclude": null},
            {"path": "/var/log/big.log", "rule": "huge-log", "severity": "WARNING",
             "line": null, "size": 11_534_336u64, "suggestedExclude": "/var/log/*"}
        ], "truncated": false}
    })
}

/// The API with alice's and bob's desktops on one node whose agent is the
/// test's (answering previews with `answer`).
async fn workshop(app: &App, answer: Answer) -> FakeAgent {
    let agent = FakeAgent::start(app, answer).await;
    let mut native = desktop("desk-alice-native", "alice", "native");
    native["podName"] = json!("desktop-alice-native");
    let containers = vec![
        desktop("desk-alice", "alice", "overlayfs"),
        desktop("desk-bob", "bob", "overlayfs"),
        native,
    ];
    app.register(&agent.url, agent.instance, containers).await;
    agent
}

fn by_id(id: &str) -> Value {
    json!({"input": {"containerId": id}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_is_asked_of_the_desktops_agent_and_shown_whole() {
    let app = App::start().await;
    let agent = workshop(&app, Answer::json(200, agent_preview())).await;

    let by_pod = json!({"input": {"podNamespace": NAMESPACE, "podName": "desktop-alice",
        "containerName": "desktop", "excludes": ["/home/*/.cache"]}});
    let data = app.data(ALICE, PREVIEW, by_pod).await;
    let preview = &data["previewSnapshot"];
    assert_eq!(preview["files"], 12);
    // Byte counts are Int64: strings of digits.
    assert_eq!(preview["totalBytes"], "11534400");
    assert_eq!(preview["biggestDirectories"][0]["bytes"], "11534336");
    assert_eq!(preview["biggestFiles"][0]["path"], "/var/log/big.log");
    assert_eq!(preview["excluded"][1]["pattern"], "/home/*/.cache");
    let findings = &preview["findings"];
    assert_eq!(
        (
            &findings["count"],
            &findings["secretCount"],
            &findings["warningCount"],
            &findings["truncated"]
        ),
        (&json!(3), &json!(2), &json!(1), &json!(false))
    );
    assert_eq!(
        findings["findings"],
        json!([
            {"path": "/root/.aws/credentials", "rule": "aws-credentials-file",
             "severity": "SECRET", "line": null, "size": null, "suggestedExclude": null},
            {"path": "/root/.env", "rule": "github-token", "severity": "SECRET",
             "line": 3, "size": null, "suggestedExclude": null},
            {"path": "/var/log/big.log", "rule": "huge-log", "severity": "WARNING",
             "line": null, "size": "11534336", "suggestedExclude": "/var/log/*"}
        ])
    );
    // The agent was asked for the container the pod names, with the
    // excludes, and with the API's token.
    let asked = agent.previews();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].container_id, "desk-alice");
    assert_eq!(asked[0].excludes, ["/home/*/.cache"]);
    assert_eq!(agent.refused_tokens(), 0);

    // By container id too; nothing was written.
    app.data(ALICE, PREVIEW, by_id("desk-alice")).await;
    assert_eq!(agent.previews().len(), 2);
    assert_eq!(app.db.query("SELECT count(*) FROM snapshots"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_refusals_reach_the_speaker_with_their_codes() {
    let app = App::start().await;
    let agent = workshop(&app, Answer::json(200, agent_preview())).await;
    let cases = [
        (
            Answer::error(404, "NOT_FOUND", "no such container"),
            "NOT_FOUND",
            "no such container",
        ),
        (
            Answer::error(
                422,
                "UNSUPPORTED_SNAPSHOTTER",
                "previews need the overlay snapshotter",
            ),
            "BAD_USER_INPUT",
            "overlayfs snapshotter, and this desktop uses \"native\"",
        ),
        (
            Answer::error(429, "BUSY", "two previews are running"),
            "RATE_LIMITED",
            "already previewing",
        ),
        (
            Answer::error(400, "BAD_USER_INPUT", "the exclude \"/x[\" is invalid"),
            "BAD_USER_INPUT",
            "the agent refused the preview: the exclude \"/x[\" is invalid",
        ),
        (
            Answer::error(500, "INTERNAL", "containerd went away"),
            "UNAVAILABLE",
            "(HTTP 500)",
        ),
        (
            Answer::error(401, "UNAUTHENTICATED", "bad token"),
            "UNAVAILABLE",
            "(HTTP 401)",
        ),
        (
            Answer::raw(200, b"not json".to_vec()),
            "UNAVAILABLE",
            "not a preview",
        ),
        (
            Answer::json(200, json!({"files": "many"})),
            "UNAVAILABLE",
            "not a preview",
        ),
        (
            Answer::raw(200, nested(100_000)),
            "UNAVAILABLE",
            "not a preview",
        ),
    ];
    for (answer, code, sentence) in cases {
        agent.answer(answer);
        let body = app
            .graphql(ALICE, PREVIEW, by_id("desk-alice-native"))
            .await;
        assert_eq!(error_code(&body).as_deref(), Some(code), "{body}");
        assert!(error_message(&body).contains(sentence), "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    assert_eq!(agent.refused_tokens(), 0);
}

/// `{"files":{"files":...}}`, `depth` levels deep.
fn nested(depth: usize) -> Vec<u8> {
    format!("{}1{}", "{\"files\":".repeat(depth), "}".repeat(depth)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_be_reached_is_unavailable() {
    let app = App::start().await;
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    app.register(
        &dead,
        uuid::Uuid::new_v4(),
        vec![desktop("desk-alice", "alice", "overlayfs")],
    )
    .await;
    let body = app.graphql(ALICE, PREVIEW, by_id("desk-alice")).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAVAILABLE"), "{body}");
    assert!(
        error_message(&body).contains("could not be reached"),
        "{body}"
    );
}

/// A valid preview padded with spaces to `bytes`.
fn padded_preview(bytes: usize) -> Vec<u8> {
    let mut body = agent_preview().to_string().into_bytes();
    body.resize(bytes, b' ');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_cap_is_dropped_declared_or_streamed() {
    let app = App::start().await;
    let cap = PreviewLimits::default().max_answer_bytes;
    assert_eq!(cap, 32 * 1024 * 1024, "the default this test is about");
    let agent = workshop(&app, Answer::json(200, agent_preview())).await;
    for chunked in [false, true] {
        let mut over = Answer::raw(200, padded_preview(cap + 1024 * 1024));
        over.chunked = chunked;
        agent.answer(over);
        let body = app.graphql(ALICE, PREVIEW, by_id("desk-alice")).await;
        assert_eq!(error_code(&body).as_deref(), Some("UNAVAILABLE"), "{body}");
        assert!(
            error_message(&body).contains(&format!("({cap} bytes)")),
            "{body}"
        );

        let mut under = Answer::raw(200, padded_preview(cap - 1024 * 1024));
        under.chunked = chunked;
        agent.answer(under);
        let data = app.data(ALICE, PREVIEW, by_id("desk-alice")).await;
        assert_eq!(data["previewSnapshot"]["findings"]["secretCount"], 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_agent_is_given_up_at_the_preview_deadline_not_the_requests() {
    let limits = PreviewLimits {
        timeout: Duration::from_secs(3),
        ..PreviewLimits::default()
    };
    let app = App::builder()
        .preview_limits(limits)
        .request_timeout(Duration::from_secs(1))
        .start()
        .await;
    let agent = workshop(&app, Answer::json(200, agent_preview())).await;

    // Slower than the request's deadline, within the preview's: answered.
    let mut slow = Answer::json(200, agent_preview());
    slow.delay = Duration::from_millis(1_800);
    agent.answer(slow);
    let started = Instant::now();
    let data = app.data(ALICE, PREVIEW, by_id("desk-alice")).await;
    assert_eq!(data["previewSnapshot"]["files"], 12);
    assert!(started.elapsed() >= Duration::from_millis(1_800));

    // Past the preview's deadline: TIMEOUT at about 3 s, not 30.
    let mut stuck = Answer::json(200, agent_preview());
    stuck.delay = Duration::from_secs(30);
    agent.answer(stuck);
    let started = Instant::now();
    let body = app.graphql(ALICE, PREVIEW, by_id("desk-alice")).await;
    let took = started.elapsed();
    println!("a stuck agent's preview ended after {took:?}");
    assert_eq!(error_code(&body).as_deref(), Some("TIMEOUT"), "{body}");
    assert!(error_message(&body).contains("within 3 s"), "{body}");
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(6)).contains(&took),
        "{took:?}"
    );

    // Other requests keep the request's deadline: a plain query answers.
    let me = app.data(ALICE, "{ me { sub } }", json!({})).await;
    assert_eq!(me["me"]["sub"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_beyond_the_cap_are_refused_at_once_and_others_still_answer() {
    let limits = PreviewLimits {
        max_waiting: 3,
        ..PreviewLimits::default()
    };
    let app = std::sync::Arc::new(App::builder().preview_limits(limits).start().await);
    let mut held = Answer::json(200, agent_preview());
    held.held = true;
    let agent = workshop(&app, held).await;

    let mut previews = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let app = app.clone();
        previews.spawn(async move {
            let started = Instant::now();
            let body = app.graphql(ALICE, PREVIEW, by_id("desk-alice")).await;
            (body, started.elapsed())
        });
    }
    // Seven are refused while three wait at the agent.
    let mut refused = 0;
    while refused < 7 {
        let (body, took) = tokio::time::timeout(Duration::from_secs(10), previews.join_next())
            .await
            .expect("the refusals come at once")
            .unwrap()
            .unwrap();
        assert_eq!(error_code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
        assert!(error_message(&body).contains("too many previews"), "{body}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        refused += 1;
    }
    assert_eq!(agent.in_flight(), 3);
    // The server still answers everything else meanwhile.
    let me = app.data(BOB, "{ me { sub } }", json!({})).await;
    assert_eq!(me["me"]["sub"], "bob");

    agent.release(3);
    while let Some(done) = previews.join_next().await {
        let (body, _) = done.unwrap();
        assert_eq!(body["data"]["previewSnapshot"]["files"], 12, "{body}");
    }
    assert_eq!(agent.most_in_flight(), 3);
    assert_eq!(agent.previews().len(), 3);

    // The permits came back: a preview passes again.
    agent.answer(Answer::json(200, agent_preview()));
    app.data(ALICE, PREVIEW, by_id("desk-alice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_and_other_speakers_desktops_never_reach_the_agent() {
    let app = App::start().await;
    let agent = workshop(&app, Answer::json(200, agent_preview())).await;

    let excludes =
        |list: Vec<String>| json!({"input": {"containerId": "desk-alice", "excludes": list}});
    let too_many: Vec<String> = (0..1_001).map(|i| format!("/data/{i}")).collect();
    let long_pattern = format!("/{}", "x".repeat(5_000));
    let long_id = "c".repeat(10 * 1024);
    let bad_input = [
        (
            "an invalid glob",
            excludes(vec!["/a/[".into()]),
            "invalid exclude pattern",
        ),
        (
            "an unclosed group",
            excludes(vec!["/a/{b".into()]),
            "invalid exclude pattern",
        ),
        (
            "the root",
            excludes(vec!["/".into()]),
            "everything or nothing",
        ),
        ("1,001 excludes", excludes(too_many), "at most 64 excludes"),
        (
            "a 5,000-byte exclude",
            excludes(vec![long_pattern]),
            "4096 bytes",
        ),
        (
            "a 10 KB container id",
            json!({"input": {"containerId": long_id}}),
            "containerId may be at most 256 bytes",
        ),
        (
            "a 10 KB pod name",
            json!({"input": {"podNamespace": NAMESPACE, "podName": "p".repeat(10 * 1024)}}),
            "podName may be at most 256 bytes",
        ),
        ("no container", json!({"input": {}}), "name the container"),
        (
            "nested lists",
            json!({"input": {"containerId": "desk-alice", "excludes": [["/a"]]}}),
            "",
        ),
    ];
    for (what, variables, sentence) in bad_input {
        let body = app.graphql(ALICE, PREVIEW, variables).await;
        assert_eq!(
            error_code(&body).as_deref(),
            Some("BAD_USER_INPUT"),
            "{what}: {body}"
        );
        assert!(error_message(&body).contains(sentence), "{what}: {body}");
    }

    // Bob's desktop answers alice exactly as one that does not exist.
    let missing = app.graphql(ALICE, PREVIEW, by_id("desk-nobody")).await;
    assert_eq!(error_code(&missing).as_deref(), Some("NOT_FOUND"));
    for variables in [
        by_id("desk-bob"),
        json!({"input": {"podNamespace": NAMESPACE, "podName": "desktop-bob"}}),
    ] {
        let body = app.graphql(ALICE, PREVIEW, variables).await;
        assert_eq!(body["errors"], missing["errors"], "{body}");
    }
    // Without a token: UNAUTHENTICATED.
    let anonymous = app
        .http
        .post(format!("{}/graphql", app.url))
        .json(&json!({"query": PREVIEW, "variables": by_id("desk-alice")}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(error_code(&anonymous).as_deref(), Some("UNAUTHENTICATED"));
    assert!(
        agent.previews().is_empty(),
        "the agent was asked: {:?}",
        agent.previews()
    );

    // The control: bob's desktop exists and previews, for bob and admins.
    app.data(BOB, PREVIEW, by_id("desk-bob")).await;
    app.data(ADMIN, PREVIEW, by_id("desk-bob")).await;
    assert_eq!(agent.previews().len(), 2);
}
