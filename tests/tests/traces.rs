//! Traces through the real `dcs-api` and `dcs-agent` processes, real
//! Postgres, containerd, runc and registry, received by a small OTLP/HTTP
//! receiver in the test (`e2e_tests::otlp_receiver`, decoding the
//! protobuf `ExportTraceServiceRequest` with the official wire types).
//!
//! - One snapshot, from `createSnapshot` to its webhook delivery, is one
//!   trace across both processes, with the parent links across them: the
//!   agent's job under the API's dispatch, the API's event handling under
//!   the agent's posts, the delivery under the event that ended the
//!   snapshot. Spans are batched for a minute here, so they reach the
//!   receiver only through the flush at SIGTERM.
//! - Hostile `traceparent` values in job requests and event posts start
//!   new traces and change nothing else.
//! - Without an endpoint nothing is exported, nothing connects (not even to
//!   the standard local port), and no trace context is stored.

use std::collections::HashSet;
use std::time::Duration;

use e2e_tests::otlp_receiver::{ConnectionCounter, OtlpReceiver, ReceivedSpan, describe};
use e2e_tests::stack::{Agent, Api, ApiOptions, Database, http_client};
use e2e_tests::webhook_receiver::{Receiver, ok};
use e2e_tests::{Ctr, TestEnv, poll, unique};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
/// A named operation: the request's span is named after it.
const CREATE: &str = "mutation TraceMe($input: CreateSnapshotInput!) { createSnapshot(input: $input) { id status } }";
const CREATE_ENDPOINT: &str = "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id } } }";

/// The parts of one test: Postgres, an API and an agent, a desktop.
struct Stack {
    db: Database,
    api: Api,
    agent: Agent,
    ctr: Ctr,
    alice: String,
    admin: String,
}

/// Starts the API (with `api_env`, and webhooks to loopback allowed) and
/// an agent (with `agent_env`), and one running desktop of alice's, `desk`.
async fn stack(api_env: &[(&str, &str)], agent_env: &[(&str, &str)], api_args: &[&str]) -> Stack {
    let env = TestEnv::get();
    let db = Database::fresh();
    let mut builder = Api::builder(ApiOptions::postgres(&db, &env.registry, 30))
        .args(["--webhook-allow", "127.0.0.0/8", "--webhook-allow-http"])
        .args(api_args);
    for (name, value) in api_env {
        builder = builder.env(name, value);
    }
    let api = builder.start().await;
    let ctr = Ctr::new(&env.containerd_socket, &unique("traces"));
    let mut agent = Agent::builder(&env, &api, "node-t", &ctr.namespace);
    for (name, value) in agent_env {
        agent = agent.env(name, value);
    }
    let agent = agent.start();
    let busybox = ctr.import_busybox("overlayfs");
    ctr.desktop("desk", busybox)
        .pod(&unique("pod"))
        .owner("alice")
        .start();
    ctr.exec("desk", "mkdir -p /opt/t && echo traced > /opt/t/file");
    let alice = api.token("alice", "speaker", &["workshop"]);
    let admin = api.token("root", "admin", &[]);
    api.wait_for_running_container(&alice, "desk").await;
    Stack {
        db,
        api,
        agent,
        ctr,
        alice,
        admin,
    }
}

impl Stack {
    /// Alice's `TraceMe` snapshot of the desktop; its id once PUSHED.
    async fn snapshot(&self) -> String {
        let target = format!(
            "{}/workshops/alice/{}:traced",
            TestEnv::get().registry,
            self.ctr.namespace
        );
        let data = self
            .api
            .data(
                &self.alice,
                CREATE,
                json!({"input": {"containerId": "desk", "target": target}}),
            )
            .await;
        let id = data["createSnapshot"]["id"].as_str().unwrap().to_string();
        let end = self.api.wait_for_end(&self.alice, &id, WAIT).await;
        assert_eq!(
            end["status"],
            "PUSHED",
            "{end}\nagent log:\n{}",
            self.agent.log_tail()
        );
        id
    }

    /// SIGTERM to both processes; both must exit (flushing their spans).
    fn terminate(&mut self) {
        let grace = Duration::from_secs(40);
        assert!(
            self.agent.terminate(grace),
            "the agent did not exit on SIGTERM:\n{}",
            self.agent.log_tail()
        );
        assert!(
            self.api.terminate(grace),
            "the API did not exit on SIGTERM:\n{}",
            self.api.log_tail()
        );
    }
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    test: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| test(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {what} span; {}",
        describe(spans)
    );
    found[0]
}

fn named<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_snapshot_is_one_trace_from_create_snapshot_to_its_webhook() {
    let collector = OtlpReceiver::start().await;
    let hooks = Receiver::start(ok()).await;
    // Nothing is sent before the flush at SIGTERM (a minute's batching,
    // a batch as big as the queue): all that arrives proves the flush.
    let batch = [
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100000"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100000"),
    ];
    let endpoint = collector.endpoint();
    // The API by its flag, the agent by the standard variable.
    let mut agent_env = batch.to_vec();
    agent_env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()));
    let mut stack = stack(&batch, &agent_env, &["--otlp-endpoint", &endpoint]).await;
    stack
        .api
        .data(
            &stack.admin,
            CREATE_ENDPOINT,
            json!({"input": {"url": hooks.url("/hook"), "eventTypes": ["SNAPSHOT_PUSHED"]}}),
        )
        .await;

    let id = stack.snapshot().await;
    // The delivery is done, its attempt recorded (its span ends with that).
    poll(
        WAIT,
        Duration::from_millis(100),
        async || {
            let status = stack.db.query(
                "SELECT status FROM webhook_deliveries WHERE event_type = 'snapshot.pushed'",
            );
            if status == "SUCCEEDED" {
                Ok(())
            } else {
                Err(status)
            }
        },
        |status| {
            format!(
                "delivery status {status:?}; API log:\n{}",
                stack.api.log_tail()
            )
        },
    )
    .await;
    let delivered = hooks.requests();
    assert_eq!(delivered.len(), 1, "one webhook");
    assert_eq!(delivered[0].json()["data"]["snapshotId"], id.as_str());
    assert_eq!(collector.requests(), 0, "nothing sent before the flush");

    stack.terminate();
    let spans = collector.spans();
    assert!(collector.refused().is_empty(), "{:?}", collector.refused());

    // The request, named after its operation, is the root of the trace.
    let request = one(&spans, "request", |s| {
        s.service == "dcs-api" && s.name == "mutation TraceMe"
    });
    assert!(request.is_root(), "the request starts the trace");
    assert_eq!(request.attribute("graphql.operation.name"), Some("TraceMe"));
    assert_eq!(
        request.attribute("graphql.operation.type"),
        Some("mutation")
    );
    let trace = request.trace_id.clone();
    let in_trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect();
    let of_snapshot = |s: &ReceivedSpan| s.attribute("snapshot_id") == Some(id.as_str());

    // Every span of the flow for this snapshot is in that one trace.
    for (service, name) in [
        ("dcs-api", "dispatch"),
        ("dcs-agent", "job"),
        ("dcs-agent", "commit"),
        ("dcs-agent", "job_event.post"),
        ("dcs-api", "agent_event"),
    ] {
        let all = named(&spans, service, name);
        let ours: Vec<_> = all.into_iter().filter(|s| of_snapshot(s)).collect();
        assert!(
            !ours.is_empty(),
            "no {service} {name} span; {}",
            describe(&spans)
        );
        for span in ours {
            assert_eq!(
                span.trace_id,
                trace,
                "{service} {name} in another trace; {}",
                describe(&spans)
            );
        }
    }
    let ids = |spans: Vec<&ReceivedSpan>| -> HashSet<String> {
        spans.into_iter().map(|s| s.span_id.clone()).collect()
    };

    // API: request -> create -> dispatch (later, from the stored row).
    let create = one(&in_trace, "create", |s| s.name == "create");
    assert_eq!(create.parent_span_id, request.span_id);
    let dispatch = one(&in_trace, "dispatch", |s| s.name == "dispatch");
    assert_eq!(
        dispatch.parent_span_id, create.span_id,
        "dispatch under the request's create"
    );

    // Across to the agent: its job is a child of the API's dispatch.
    let job = one(&in_trace, "job", |s| {
        s.service == "dcs-agent" && s.name == "job"
    });
    assert_eq!(
        job.parent_span_id, dispatch.span_id,
        "the agent's job under the API's dispatch"
    );
    let commit = one(&in_trace, "commit", |s| s.name == "commit");
    assert_eq!(commit.parent_span_id, job.span_id);
    // The commit's phases, under the commit (the delta inside the pause).
    let phase = |name: &str| one(&in_trace, name, |s| s.name == name).clone();
    for name in [
        "commit.bulk_read",
        "commit.pause",
        "commit.push",
        "commit.manifest",
    ] {
        assert_eq!(phase(name).parent_span_id, commit.span_id, "{name}");
    }
    assert_eq!(
        phase("commit.delta").parent_span_id,
        phase("commit.pause").span_id
    );

    // And back: each event post of the agent is under its job, and the
    // API's handling of it under the post.
    let posts = named(&in_trace, "dcs-agent", "job_event.post");
    assert!(
        posts.iter().all(|p| p.parent_span_id == job.span_id),
        "{}",
        describe(&in_trace)
    );
    let post_ids = ids(posts);
    let events = named(&in_trace, "dcs-api", "agent_event");
    assert!(
        events.len() >= 3,
        "DIFFING, PUSHING.., PUSHED: {}",
        describe(&in_trace)
    );
    for event in &events {
        assert!(
            post_ids.contains(&event.parent_span_id),
            "agent_event under a post: {}",
            describe(&in_trace)
        );
    }

    // The webhook, sent later by the worker, continues the trace under the
    // event that ended the snapshot.
    let delivery = one(&in_trace, "delivery", |s| s.name == "webhook.deliver");
    assert_eq!(delivery.service, "dcs-api");
    assert_eq!(delivery.attribute("status_code"), Some("200"));
    assert!(
        ids(events).contains(&delivery.parent_span_id),
        "delivery under an agent_event: {}",
        describe(&in_trace)
    );
    assert_eq!(
        stack.db.query(&format!(
            "SELECT count(*) FROM snapshots WHERE id = '{id}' AND trace_parent LIKE '00-{trace}-%'"
        )),
        "1",
        "the snapshot row keeps its trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traceparents_start_new_traces_and_fail_nothing() {
    let collector = OtlpReceiver::start().await;
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let stack = stack(&env, &env, &[]).await;
    let http = http_client();

    // A parent the test makes up, and values that must not be parents.
    let good_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let good = format!("00-{good_trace}-00f067aa0ba902b7-01");
    let hostile: Vec<String> = vec![
        "garbage".into(),
        format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
        format!("00-{good_trace}-00f067aa0ba902b7-01-extra"),
        good.to_uppercase(),
        format!("{good}{}", " ".repeat(600)),
        format!("00-{good_trace}-{}-01", "f".repeat(16_000)),
        "x".repeat(512 * 1024),
    ];

    // Job requests straight to the agent, for containers that do not
    // exist (the job fails at once; only its span matters here).
    let token = stack.agent.api_token(&stack.api);
    let job = |snapshot: &str, traceparent: Option<&str>| {
        let mut body = json!({
            "snapshotId": snapshot, "containerId": unique("nothing"),
            "target": {"registry": "127.0.0.1:1", "repository": "w/x", "tag": "t"},
            "compression": "zstd", "pause": false, "excludes": [], "changes": [],
            "message": null,
        });
        if let Some(traceparent) = traceparent {
            body["traceparent"] = json!(traceparent);
        }
        body
    };
    let mut jobs: Vec<(String, Option<&str>)> = Vec::new();
    for value in hostile
        .iter()
        .map(|v| Some(v.as_str()))
        .chain([Some(good.as_str()), None])
    {
        let snapshot = uuid::Uuid::new_v4().to_string();
        let response = http
            .post(format!("{}/v1/jobs", stack.agent.url()))
            .bearer_auth(&token)
            .json(&job(&snapshot, value))
            .send()
            .await
            .expect("job request");
        assert_eq!(
            response.status(),
            202,
            "{:?}",
            value.map(|v| &v[..v.len().min(60)])
        );
        jobs.push((snapshot, value));
    }
    // A traceparent of another JSON type is no error either.
    let snapshot = uuid::Uuid::new_v4().to_string();
    let mut odd = job(&snapshot, None);
    odd["traceparent"] = json!({"nested": [[[1]]], "n": 1e300});
    let response = http
        .post(format!("{}/v1/jobs", stack.agent.url()))
        .bearer_auth(&token)
        .json(&odd)
        .send()
        .await
        .expect("job request");
    assert_eq!(response.status(), 202);
    jobs.push((snapshot, None));

    // Event posts to the API, for a snapshot it does not know: every one
    // gets the answer one without a header gets.
    let agent_token = stack.api.agent_token("node-t");
    let event = |snapshot: &str| {
        json!({"snapshotId": snapshot, "node": "node-t", "instanceId": uuid::Uuid::new_v4(),
               "seq": 1, "at": "2026-12-03T00:00:00Z", "kind": {"type": "DIFFING"}})
    };
    let post = async |snapshot: &str, traceparent: Option<&[u8]>| {
        let mut request = http
            .post(format!("{}/agent/v1/events", stack.api.url))
            .bearer_auth(&agent_token)
            .json(&event(snapshot));
        if let Some(value) = traceparent {
            request = request.header(
                "traceparent",
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let response = request.send().await.expect("event post");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    };
    let baseline = post(&uuid::Uuid::new_v4().to_string(), None).await;
    assert_eq!(baseline.0, 404, "{baseline:?}");
    // As headers: not the half-megabyte one (over HTTP's header limits),
    // nor the padded one (HTTP itself strips a value's trailing spaces).
    let mut header_values: Vec<Vec<u8>> = hostile
        .iter()
        .filter(|v| v.len() < 20_000 && !v.ends_with(' '))
        .map(|v| v.clone().into_bytes())
        .collect();
    header_values.push(b"00-\xff\xfe-not-text".to_vec());
    let mut posts: Vec<(String, bool)> = Vec::new();
    for value in header_values
        .iter()
        .map(|v| Some(v.as_slice()))
        .chain([Some(good.as_bytes())])
    {
        let snapshot = uuid::Uuid::new_v4().to_string();
        let (status, body) = post(&snapshot, value).await;
        assert_eq!(
            (status, body.replace(&snapshot, "")),
            (baseline.0, baseline.1.clone())
        );
        posts.push((snapshot, value == Some(good.as_bytes())));
    }

    let expected_jobs = jobs.len();
    let expected_posts = posts.len();
    let spans = collector
        .wait_for(
            WAIT,
            "a job span per request and an agent_event span per post",
            |spans| {
                let jobs_seen = spans
                    .iter()
                    .filter(|s| {
                        s.name == "job"
                            && jobs
                                .iter()
                                .any(|(id, _)| s.attribute("snapshot_id") == Some(id))
                    })
                    .count();
                let posts_seen = spans
                    .iter()
                    .filter(|s| {
                        s.name == "agent_event"
                            && posts
                                .iter()
                                .any(|(id, _)| s.attribute("snapshot_id") == Some(id))
                    })
                    .count();
                jobs_seen >= expected_jobs && posts_seen >= expected_posts
            },
        )
        .await;
    let span_of = |name: &str, snapshot: &str| {
        one(&spans, name, |s| {
            s.name == name && s.attribute("snapshot_id") == Some(snapshot)
        })
        .clone()
    };
    for (snapshot, value) in &jobs {
        let span = span_of("job", snapshot);
        if *value == Some(good.as_str()) {
            assert_eq!(
                (span.trace_id.as_str(), span.parent_span_id.as_str()),
                (good_trace, "00f067aa0ba902b7")
            );
        } else {
            assert!(
                span.is_root(),
                "job span with {:?}: {span:?}",
                value.map(|v| &v[..v.len().min(60)])
            );
            assert_ne!(span.trace_id, good_trace);
        }
    }
    for (snapshot, is_good) in &posts {
        let span = span_of("agent_event", snapshot);
        if *is_good {
            assert_eq!(
                (span.trace_id.as_str(), span.parent_span_id.as_str()),
                (good_trace, "00f067aa0ba902b7")
            );
        } else {
            assert!(span.is_root(), "agent_event span: {span:?}");
            assert_ne!(span.trace_id, good_trace);
        }
    }
    // Each hostile value made a trace of its own, not one shared trace.
    let new_roots: Vec<String> = jobs
        .iter()
        .filter(|(_, value)| *value != Some(good.as_str()))
        .map(|(id, _)| span_of("job", id).trace_id)
        .chain(
            posts
                .iter()
                .filter(|(_, good)| !good)
                .map(|(id, _)| span_of("agent_event", id).trace_id),
        )
        .collect();
    let distinct: HashSet<&String> = new_roots.iter().collect();
    assert_eq!(distinct.len(), new_roots.len(), "{}", describe(&spans));

    // Both still work: a real snapshot goes through.
    stack.snapshot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_nothing_connects() {
    // The standard local OTLP/HTTP port, where an exporter with no endpoint
    // of its own would send: nothing may connect to it.
    let standard = ConnectionCounter::bind("127.0.0.1:4318")
        .await
        .unwrap_or_else(|e| {
            panic!("this test needs 127.0.0.1:4318 (the standard OTLP/HTTP port) free: {e}")
        });
    let standard_v6 = ConnectionCounter::bind("[::1]:4318").await.ok();
    let collector = OtlpReceiver::start().await;
    // Everything but an endpoint: the service name, fast batching, a
    // header; and for the agent an endpoint set but empty.
    let settings = [
        ("OTEL_SERVICE_NAME", "should-not-matter"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-test=1"),
    ];
    let mut agent_env = settings.to_vec();
    agent_env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", ""));
    let mut stack = stack(&settings, &agent_env, &[]).await;

    let id = stack.snapshot().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.terminate();
    assert_eq!(
        standard.connections(),
        0,
        "something connected to 127.0.0.1:4318"
    );
    if let Some(v6) = standard_v6 {
        assert_eq!(v6.connections(), 0, "something connected to [::1]:4318");
    }
    assert_eq!(collector.requests(), 0);
    // No trace context was produced, so none was stored or sent on.
    assert_eq!(
        stack.db.query(&format!(
            "SELECT count(*) FROM snapshots WHERE id = '{id}' AND trace_parent IS NULL"
        )),
        "1"
    );
}
