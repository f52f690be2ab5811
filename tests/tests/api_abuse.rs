//! Abusive clients against the real `dcs-api` process (issue 8): huge and
//! malformed bodies, WebSocket abuse, nested and alias-amplified lineage
//! queries, a request past its deadline, SIGTERM with a runaway request.
//! Memory and CPU are read from the process's `/proc` entry; the database
//! side from Postgres's `pg_stat_activity`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e_tests::stack::{Api, ApiOptions, Database, WsOutcome, http_client, jwt};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const MIB: usize = 1024 * 1024;

/// The tests that measure time, CPU or memory run one at a time (the
/// suite runs tests in parallel): a runaway request of one would take the
/// cores another measures.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start_api(database: Option<&Database>, extra: &[&str]) -> Api {
    let options = match database {
        Some(db) => ApiOptions::postgres(db, "registry.test", 10),
        None => ApiOptions::sqlite("registry.test", 10),
    };
    Api::builder(options).args(extra).start().await
}

/// A `/proc/<pid>/status` value in kB (`VmRSS`, `VmHWM`).
fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start at 3.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / clock_ticks() as f64
}

fn clock_ticks() -> u64 {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(100)
}

/// Whether the process has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat[stat.rfind(')').unwrap_or(0) + 2..].starts_with('Z'),
    }
}

fn admin_token(api: &Api) -> String {
    api.token("root", "admin", &[])
}

/// Sends a request head and then, while reading the answer, a body of
/// `total` bytes (chunked when `chunked`, else as the declared length) in
/// 64 KiB pieces until the server stops taking it. Returns the status, the
/// answer's body and how many body bytes the server took.
fn send_huge_body(
    port: u16,
    path: &str,
    headers: &str,
    total: usize,
    chunked: bool,
) -> (u16, Value, usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}{length}\r\n\r\n"
    )
    .unwrap();
    let mut writer = stream.try_clone().expect("clone socket");
    let sender = std::thread::spawn(move || {
        let piece = vec![b' '; 64 * 1024];
        let mut sent = 0usize;
        while sent < total {
            let result = if chunked {
                write!(writer, "{:x}\r\n", piece.len())
                    .and_then(|()| writer.write_all(&piece))
                    .and_then(|()| writer.write_all(b"\r\n"))
            } else {
                writer.write_all(&piece)
            };
            if result.is_err() {
                break;
            }
            sent += piece.len();
        }
        sent
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    // Read until the head and the whole (small) JSON body are in.
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = sender.join().expect("sender thread");
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, json, sent)
}

fn graphql_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gb_unauthenticated_body_is_refused_without_being_buffered() {
    let _one_at_a_time = MEASURING.lock().await;
    let api = start_api(None, &[]).await;
    let pid = api.pid().expect("API pid");
    let before = memory_kb(pid, "VmRSS");
    let port = api.port;
    for chunked in [false, true] {
        let started = Instant::now();
        let (status, body, sent) = tokio::task::spawn_blocking(move || {
            send_huge_body(port, "/graphql", "", 1 << 30, chunked)
        })
        .await
        .unwrap();
        println!(
            "1 GB {}: {status} after {:?}, {} MiB taken, {body}",
            if chunked { "chunked" } else { "declared" },
            started.elapsed(),
            sent / MIB
        );
        assert_eq!(status, 413, "{body}");
        assert_eq!(graphql_code(&body), "PAYLOAD_TOO_LARGE");
        assert!(sent < 1 << 30, "the server read the whole gigabyte");
    }
    // The agents' endpoints too, in their own error shape: unauthenticated,
    // refused before the body is read; authenticated, read up to the limit.
    let (status, body, _) = tokio::task::spawn_blocking(move || {
        send_huge_body(port, "/agent/v1/heartbeat", "", 1 << 30, true)
    })
    .await
    .unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["code"], "UNAUTHENTICATED", "{body}");
    let auth = format!("Authorization: Bearer {}\r\n", api.agent_token("node-1"));
    let (status, body, _) = tokio::task::spawn_blocking(move || {
        send_huge_body(port, "/agent/v1/heartbeat", &auth, 1 << 30, true)
    })
    .await
    .unwrap();
    assert_eq!(status, 413);
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE", "{body}");
    let peak = memory_kb(pid, "VmHWM");
    let after = memory_kb(pid, "VmRSS");
    println!(
        "API resident memory: {} MiB before, {} MiB after, peak {} MiB",
        before / 1024,
        after / 1024,
        peak / 1024
    );
    assert!(
        peak.saturating_sub(before) < 50 * 1024,
        "resident memory grew by {} MiB",
        (peak - before) / 1024
    );
    // Still serving.
    let me = api.graphql(None, "{ __typename }", json!({})).await;
    assert_eq!(me["data"]["__typename"], "Query", "{me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_answered_with_json_and_a_code() {
    let api = start_api(None, &[]).await;
    let http = http_client();
    let url = format!("{}/graphql", api.url);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "not JSON",
            http.post(&url)
                .header("content-type", "application/json")
                .body("{\"query\": "),
            400,
        ),
        (
            "a JSON string",
            http.post(&url)
                .header("content-type", "application/json")
                .body("\"hello\""),
            400,
        ),
        (
            "a batch",
            http.post(&url)
                .header("content-type", "application/json")
                .body("[{\"query\": \"{ __typename }\"}]"),
            400,
        ),
        (
            "multipart",
            http.post(&url)
                .header("content-type", "multipart/form-data; boundary=x")
                .body("--x\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--x--\r\n"),
            415,
        ),
        (
            "a form",
            http.post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("query=%7B__typename%7D"),
            415,
        ),
        ("an unknown path", http.get(format!("{}/nope", api.url)), 404),
        ("a wrong method", http.put(&url).body("{}"), 405),
        (
            "a GraphQL syntax error",
            http.post(&url).json(&json!({"query": "{ snapshots( }"})),
            200,
        ),
    ];
    for (what, request, status) in cases {
        let response = request.send().await.expect(what);
        let got = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{what}: not JSON ({got}): {text:?}"));
        println!("{what}: {got} {body}");
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            body["errors"][0]["message"].is_string(),
            "{what}: no message: {body}"
        );
        assert!(graphql_code(&body).len() > 3, "{what}");
        assert!(!text.contains("ParseRequestError"), "{what}: {text}");
    }
    // An agent endpoint: a malformed body in the agents' error shape.
    let node = "node-1";
    let response = http
        .post(format!("{}/agent/v1/heartbeat", api.url))
        .bearer_auth(api.agent_token(node))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "BAD_USER_INPUT", "{body}");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(api: &Api) -> Socket {
    let mut request = format!("ws://127.0.0.1:{}/graphql", api.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connect")
        .0
}

/// Messages until the socket closes: the close code and reason, and the
/// text messages before it.
async fn until_closed(
    socket: &mut Socket,
    timeout: Duration,
) -> (Option<(u16, String)>, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return (None, texts),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    texts,
                );
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "ping" {
                    let _ = socket
                        .send(Message::text(json!({"type": "pong"}).to_string()))
                        .await;
                }
                texts.push(value);
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_abuse_is_closed_with_a_code() {
    let api = start_api(
        None,
        &[
            "--ws-init-timeout-seconds",
            "1",
            "--ws-max-subscriptions",
            "2",
            "--ws-max-message-bytes",
            "65536",
        ],
    )
    .await;

    // No connection_init: closed with graphql-transport-ws's 4408.
    let started = Instant::now();
    let mut silent = socket(&api).await;
    let (close, _) = until_closed(&mut silent, Duration::from_secs(5)).await;
    println!("silent client: {close:?} after {:?}", started.elapsed());
    assert_eq!(close.as_ref().map(|c| c.0), Some(4408), "{close:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A message over the limit: 1009.
    let mut big = socket(&api).await;
    let payload = json!({"type": "connection_init", "payload": {"pad": "x".repeat(200_000)}});
    let _ = big.send(Message::text(payload.to_string())).await;
    let (close, _) = until_closed(&mut big, Duration::from_secs(5)).await;
    println!("200 kB message: {close:?}");
    assert_eq!(close.as_ref().map(|c| c.0), Some(1009), "{close:?}");

    // More subscriptions than the cap: the extra one gets an error with a
    // code, the others keep running.
    let token = admin_token(&api);
    let mut many = socket(&api).await;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    many.send(Message::text(init.to_string())).await.unwrap();
    let ack = many.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    for id in ["a", "b", "c"] {
        let subscribe = json!({"id": id, "type": "subscribe",
            "payload": {"query": "subscription { snapshotEvents { snapshotId } }"}});
        many.send(Message::text(subscribe.to_string()))
            .await
            .unwrap();
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), many.next())
        .await
        .expect("an answer to the third subscription")
        .unwrap()
        .unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    println!("third subscription: {answer}");
    assert_eq!(answer["id"], "c");
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // A token that expires in 3 s: the connection is closed then.
    let mut claims = jwt::user_claims("root", "admin", &[]);
    claims["exp"] = json!(jwt::now() + 3);
    let short = jwt::hs256(&api.jwt_secret(), &claims);
    let mut expiring = socket(&api).await;
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {short}")}});
    expiring
        .send(Message::text(init.to_string()))
        .await
        .unwrap();
    let subscribe = json!({"id": "1", "type": "subscribe",
        "payload": {"query": "subscription { snapshotEvents { snapshotId } }"}});
    expiring
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let started = Instant::now();
    let (close, texts) = until_closed(&mut expiring, Duration::from_secs(10)).await;
    println!(
        "expiring token: {close:?} after {:?} ({texts:?})",
        started.elapsed()
    );
    assert_eq!(close.as_ref().map(|c| c.0), Some(4401), "{close:?}");
    assert!(started.elapsed() < Duration::from_secs(6));

    // A bad token is still refused at connection_init.
    let outcome = api
        .ws_init(Some(json!({"Authorization": "Bearer nope"})))
        .await;
    assert!(matches!(outcome, WsOutcome::Closed(..)), "{outcome:?}");
}

/// A lineage of `length` generations (plus the root), ids derived from
/// `md5('chain-<n>')`; returns the newest's id.
fn seed_chain(db: &Database, length: usize) -> String {
    db.query(&format!(
        "INSERT INTO snapshots (id, requested_by, node, container_id, pod_namespace, target, \
           repository, options, status, phase_bytes_done, phase_bytes_total, last_event_seq, \
           dispatch_attempts, created_at, updated_at, parent_id) \
         SELECT md5('chain-' || g)::uuid, 'alice', 'node-1', 'desk', 'ws', \
           'registry.test/workshops/alice/d:v' || g, 'registry.test/workshops/alice/d', \
           '{{\"changes\":[],\"excludes\":[],\"compression\":\"gzip\",\"pause\":true}}', \
           'PUSHED', 0, 0, 3, 1, \
           now() - interval '1 day' + g * interval '1 second', \
           now() - interval '1 day' + g * interval '1 second', \
           CASE WHEN g = 0 THEN NULL ELSE md5('chain-' || (g - 1))::uuid END \
         FROM generate_series(0, {length}) g; ANALYZE snapshots"
    ));
    db.query(&format!("SELECT md5('chain-{length}')::uuid"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_lineage_and_alias_amplified_lists_are_refused_within_100_ms() {
    let _one_at_a_time = MEASURING.lock().await;
    let db = Database::fresh();
    let api = start_api(Some(&db), &[]).await;
    let newest = seed_chain(&db, 500);
    let token = admin_token(&api);

    // A flat walk of the whole chain is allowed, and quick.
    let started = Instant::now();
    let flat = api
        .data(
            &token,
            "query($id: ID!) { snapshot(id: $id) { ancestors(first: 1000) { id } } }",
            json!({"id": newest}),
        )
        .await;
    println!("flat ancestors of 500 generations: {:?}", started.elapsed());
    assert_eq!(flat["snapshot"]["ancestors"].as_array().unwrap().len(), 500);
    let root = flat["snapshot"]["ancestors"][499]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let descendants = api
        .data(
            &token,
            "query($id: ID!) { snapshot(id: $id) { descendants(first: 1000) { id } } }",
            json!({"id": root}),
        )
        .await;
    assert_eq!(
        descendants["snapshot"]["descendants"][499]["id"], newest,
        "the newest is the 500th descendant"
    );

    let refused = [
        (
            "nested lineage",
            "query($id: ID!) { snapshot(id: $id) { ancestors { ancestors { ancestors { ancestors { id } } } } } }"
                .to_string(),
        ),
        (
            "lineage in lineage",
            "query($id: ID!) { snapshot(id: $id) { ancestors(first: 1000) { descendants(first: 1000) { id } } } }"
                .to_string(),
        ),
        (
            "aliased lists",
            format!(
                "query($id: ID!) {{ {} }}",
                (0..50)
                    .map(|i| format!("a{i}: snapshot(id: $id) {{ ancestors(first: 1000) {{ id }} }}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        (
            "aliased pages",
            format!(
                "{{ {} }}",
                (0..50)
                    .map(|i| format!("p{i}: snapshots(first: 100) {{ edges {{ node {{ id }} }} }}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
    ];
    for (what, query) in refused {
        let started = Instant::now();
        let body = api
            .graphql(Some(&token), &query, json!({"id": newest}))
            .await;
        let took = started.elapsed();
        println!("{what}: refused in {took:?}: {}", body["errors"][0]);
        assert!(body["data"].is_null(), "{what}: {body}");
        assert_eq!(graphql_code(&body), "BAD_USER_INPUT", "{what}");
        assert!(
            took < Duration::from_millis(100),
            "{what}: refused after {took:?}"
        );
    }
}

/// Three lineage lists nested, with the cost limits lifted: millions of
/// rows to build, the runaway the deadline must stop.
const RUNAWAY: &str = "query($id: ID!) { snapshot(id: $id) { ancestors(first: 400) { \
    ancestors(first: 400) { ancestors(first: 400) { id requestedBy target } } } } }";
const NO_COST_LIMITS: [&str; 4] = [
    "--max-query-complexity",
    "1000000000000",
    "--max-query-depth",
    "100",
];

/// The API's statements running in this database.
fn active_statements(db: &Database) -> Vec<String> {
    let rows = db.query(
        "SELECT left(query, 80) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'dcs-api' \
         AND state = 'active'",
    );
    rows.lines().map(str::to_string).collect()
}

/// Samples the process's CPU time for `window`; seconds used.
async fn cpu_used(pid: u32, window: Duration) -> f64 {
    let before = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    cpu_seconds(pid) - before
}

/// How long until the process goes quiet (under 0.05 s of CPU in half a
/// second), if it does within `limit`.
async fn time_until_quiet(pid: u32, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cpu_used(pid, Duration::from_millis(500)).await < 0.05 {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_stops_its_work() {
    let _one_at_a_time = MEASURING.lock().await;
    let db = Database::fresh();
    let mut extra = NO_COST_LIMITS.to_vec();
    extra.extend(["--request-timeout-seconds", "2"]);
    let api = start_api(Some(&db), &extra).await;
    let pid = api.pid().unwrap();
    let newest = seed_chain(&db, 500);
    let token = admin_token(&api);

    // CPU: the runaway is answered TIMEOUT at its deadline, and the
    // process goes quiet.
    let started = Instant::now();
    let body = api
        .graphql(Some(&token), RUNAWAY, json!({"id": newest}))
        .await;
    let took = started.elapsed();
    println!("runaway answered after {took:?}: {}", body["errors"][0]);
    assert_eq!(graphql_code(&body), "TIMEOUT", "{body}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    let quiet = time_until_quiet(pid, Duration::from_secs(3)).await;
    println!("quiet {quiet:?} after the deadline's answer");
    assert!(quiet.is_some(), "the API kept working after the deadline");
    let used = cpu_used(pid, Duration::from_secs(1)).await;
    assert!(used < 0.1, "the API works again: {used:.2} s of CPU");

    // The client leaves long before the deadline: the work stops too (a
    // second API on the same database, with a 60 s deadline). The client
    // leaves after 1.5 s, once the database part of the walk is done:
    // leaving in the middle of a 160,000-row answer costs about a second
    // more while that answer is read off the socket and dropped.
    let mut patient_extra = NO_COST_LIMITS.to_vec();
    patient_extra.extend(["--request-timeout-seconds", "60"]);
    let patient = start_api(Some(&db), &patient_extra).await;
    let patient_pid = patient.pid().unwrap();
    // A raw connection, closed by the client at 1.5 s without an answer.
    let body = json!({"query": RUNAWAY, "variables": {"id": newest}}).to_string();
    let patient_token = admin_token(&patient);
    let port = patient.port;
    let answered = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            stream,
            "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {patient_token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut buffer = [0u8; 64];
        let answered = matches!(stream.read(&mut buffer), Ok(n) if n > 0);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        answered
    })
    .await
    .unwrap();
    assert!(!answered, "the request should still run at 1.5 s");
    // Undisturbed, this request works for more than 10 s.
    let quiet = time_until_quiet(patient_pid, Duration::from_secs(3)).await;
    println!("quiet {quiet:?} after the client left");
    assert!(
        quiet.is_some(),
        "the API kept working after its client left"
    );
    let used = cpu_used(patient_pid, Duration::from_secs(1)).await;
    assert!(used < 0.1, "the API works again: {used:.2} s of CPU");
    drop(patient);

    // Postgres: a statement blocked past the deadline is gone from
    // pg_stat_activity. (A lock held by another session stands in for a
    // statement that takes long.)
    let mut locker = std::process::Command::new("psql")
        .arg(&db.url)
        .args([
            "-c",
            "BEGIN; LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30);",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let request =
        {
            let url = format!("{}/graphql", api.url);
            let token = token.clone();
            let newest = newest.clone();
            tokio::spawn(async move {
                http_client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"query": "query($id: ID!) { snapshot(id: $id) { ancestors { id } } }",
                    "variables": {"id": newest}}))
                .send()
                .await
                .expect("POST")
                .json::<Value>()
                .await
                .expect("JSON")
            })
        };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = active_statements(&db);
    println!("during: {during:?}");
    assert!(
        !during.is_empty(),
        "the request's statement should be waiting"
    );
    let body = request.await.unwrap();
    assert_eq!(graphql_code(&body), "TIMEOUT", "{body}");
    let mut after = active_statements(&db);
    // statement_timeout equals the deadline; allow for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !after.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = active_statements(&db);
    }
    println!("after: {after:?}");
    let _ = locker.kill();
    let _ = locker.wait();
    assert!(
        after.is_empty(),
        "still running after the deadline: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_runaway_request_exits_within_the_grace_period() {
    let _one_at_a_time = MEASURING.lock().await;
    let db = Database::fresh();
    let mut extra = NO_COST_LIMITS.to_vec();
    extra.extend([
        "--request-timeout-seconds",
        "120",
        "--shutdown-grace-seconds",
        "2",
    ]);
    let api = start_api(Some(&db), &extra).await;
    let pid = api.pid().unwrap();
    let newest = seed_chain(&db, 500);
    let token = admin_token(&api);
    let runaway = {
        let url = format!("{}/graphql", api.url);
        tokio::spawn(async move {
            http_client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"query": RUNAWAY, "variables": {"id": newest}}))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!exited(pid));
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    while !exited(pid) && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    println!(
        "exited {took:?} after SIGTERM (grace 2 s)\n{}",
        api.log_tail()
    );
    assert!(exited(pid), "still running 15 s after SIGTERM");
    // The grace period, plus the exit of a process busy on both cores
    // (about a second on a loaded machine).
    assert!(took < Duration::from_millis(4500), "took {took:?}");
    assert!(api.log().contains("grace period"), "{}", api.log_tail());
    runaway.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_agent_tokens_are_rate_limited_before_token_review() {
    let kube = e2e_tests::fake_kube::FakeKube::start().await;
    let api = start_api(None, &["--kubernetes-api-url", &kube.url]).await;
    let http = http_client();
    let heartbeat = |token: String| {
        http.post(format!("{}/agent/v1/heartbeat", api.url))
            .bearer_auth(token)
            .json(&json!({"node": "node-1"}))
            .send()
    };
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..100 {
        let response = heartbeat(format!("garbage-{i}")).await.expect("heartbeat");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON error");
        *codes
            .entry(format!("{status} {}", body["code"].as_str().unwrap_or("?")))
            .or_default() += 1;
    }
    let reviews = kube.token_reviews().len();
    println!("100 unknown tokens: {codes:?}; {reviews} TokenReviews");
    // The limiter's burst for one client address.
    assert!(
        reviews <= 20,
        "{reviews} TokenReviews for 100 unknown tokens"
    );
    assert_eq!(codes.get("429 RATE_LIMITED").copied(), Some(100 - reviews));
    assert_eq!(codes.get("401 UNAUTHENTICATED").copied(), Some(reviews));
    // A token refused a moment ago is refused again without a review.
    let before = kube.token_reviews().len();
    let again = heartbeat("garbage-0".into()).await.unwrap();
    assert_eq!(again.status().as_u16(), 401);
    assert_eq!(kube.token_reviews().len(), before);
    // Agents signing with the shared secret are not limited.
    let good = heartbeat(api.agent_token("node-1")).await.unwrap();
    assert!(
        ![401, 429].contains(&good.status().as_u16()),
        "{}",
        good.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_on_their_own_address_only() {
    let metrics_port = e2e_tests::stack::free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let api = start_api(None, &["--metrics-listen", &listen]).await;
    let http = http_client();
    let on_api = http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status().as_u16(), 404, "/metrics on the API's port");
    let body: Value = on_api.json().await.unwrap();
    assert_eq!(graphql_code(&body), "NOT_FOUND");
    let mut text = String::new();
    for _ in 0..50 {
        if let Ok(r) = http.get(format!("http://{listen}/metrics")).send().await {
            assert!(r.status().is_success(), "{}", r.status());
            text = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("# EOF"), "OpenMetrics text: {text:?}");
    // Nothing else there.
    let other = http
        .get(format!("http://{listen}/graphql"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
}
