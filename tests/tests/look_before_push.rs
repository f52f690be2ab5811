//! Look before you push (issue 11), on real containerd, runc, registry and
//! the real `dcs-agent`: secrets planted in a running desktop are found by
//! the preview and by the commit alike, a refused commit leaves nothing in
//! the registry, acknowledging or excluding lets it through, containerd's
//! Diff-service path is scanned too, a clean corpus (this machine's
//! /usr/share) gives no secret, and the agent's preview endpoint holds its
//! limits. No planted value appears in any output.

use std::process::Output;
use std::time::{Duration, Instant};

use e2e_tests::secrets::{plant_everything, plant_few};
use e2e_tests::stack::{Agent, Api, ApiOptions, assert_nothing_pushed, http_client};
use e2e_tests::{Ctr, TestEnv, commit_output, container_rootfs, preview, preview_output, unique};
use serde_json::{Value, json};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(output)))
}

#[test]
fn planted_secrets_are_found_refused_and_pushed_once_acknowledged_or_excluded() {
    let env = TestEnv::get();
    let namespace = unique("scan");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.desktop("desk", busybox).owner("alice").start();
    let scratch = std::env::temp_dir().join(unique("dcs-scan"));
    std::fs::create_dir_all(&scratch).unwrap();
    let planted = plant_everything(&container_rootfs(&namespace, "desk"), &scratch);
    let mut outputs = String::new();

    // (a) Every planted secret with its rule and line, nothing for the
    // tricks, the look-alikes or the excluded /tmp.
    ctr.exec("desk", "echo 'TOKEN=ghp_excluded_by_default' > /tmp/.env");
    let started = Instant::now();
    let output = preview_output(&env.containerd_socket, &namespace, "desk", &[]);
    let preview_time = started.elapsed();
    outputs.push_str(&text(&output));
    assert!(
        output.status.success(),
        "preview failed: {}",
        stderr(&output)
    );
    let preview = json_of(&output);
    assert_eq!(
        preview["findings"]["findings"],
        planted.expected(),
        "preview findings"
    );
    assert_eq!(preview["findings"]["truncated"], false);
    eprintln!(
        "preview of {} files, {} bytes in {preview_time:?}: {} findings",
        preview["files"],
        preview["totalBytes"],
        planted.findings.len()
    );

    // (b) The commit finds the same and refuses: its JSON is the preview's.
    let repository = format!("{namespace}/desk");
    let target = |tag: &str| format!("{}/{repository}:{tag}", env.registry);
    let zstd = ["--compression", "zstd"];
    let refused = commit_output(
        &env,
        &env.containerd_socket,
        &namespace,
        "desk",
        &target("refused"),
        &zstd,
    );
    outputs.push_str(&text(&refused));
    assert!(
        !refused.status.success(),
        "a desktop full of secrets was pushed"
    );
    assert_eq!(
        json_of(&refused),
        preview["findings"],
        "commit and preview disagree"
    );
    let sentence = stderr(&refused);
    assert_eq!(sentence.lines().count(), 1, "{sentence}");
    let secrets = planted.acknowledgements().len();
    assert!(
        sentence.contains(&format!("{secrets} secrets found"))
            && sentence.contains(&format!("and {} more", secrets - 5))
            && sentence.contains("/home/speaker/.config/gcloud/application_default_credentials.json: gcloud-credentials"),
        "{sentence}"
    );
    // (c) Nothing reached the registry, and the lease let the content go.
    assert_nothing_pushed(&repository);
    let leases = ctr.run(&["leases", "ls", "-q"]);
    assert!(
        !leases.lines().any(|l| l.starts_with("dcs-commit-")),
        "the commit's lease outlived the refusal: {leases}"
    );

    // A partial acknowledgement still fails, naming what is left.
    let acknowledgements = planted.acknowledgements();
    let mut args: Vec<String> = zstd.iter().map(|s| s.to_string()).collect();
    for ack in &acknowledgements[1..] {
        args.extend(["--acknowledge".to_string(), ack.clone()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let partial = commit_output(
        &env,
        &env.containerd_socket,
        &namespace,
        "desk",
        &target("partial"),
        &refs,
    );
    outputs.push_str(&text(&partial));
    assert!(
        !partial.status.success(),
        "pushed with one secret unacknowledged"
    );
    let (rule, path) = acknowledgements[0].split_once(':').unwrap();
    assert!(
        stderr(&partial).starts_with(&format!(
            "dcs-agent: 1 secret found and neither acknowledged nor excluded: {path}"
        )) && stderr(&partial).contains(rule),
        "{}",
        stderr(&partial)
    );
    assert_eq!(json_of(&partial), preview["findings"]);
    assert_nothing_pushed(&repository);

    // Acknowledging every secret pushes; the result lists the findings.
    let mut args: Vec<String> = zstd.iter().map(|s| s.to_string()).collect();
    for ack in &acknowledgements {
        args.extend(["--acknowledge".to_string(), ack.clone()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let acknowledged = commit_output(
        &env,
        &env.containerd_socket,
        &namespace,
        "desk",
        &target("acknowledged"),
        &refs,
    );
    outputs.push_str(&text(&acknowledged));
    assert!(acknowledged.status.success(), "{}", stderr(&acknowledged));
    assert_eq!(json_of(&acknowledged)["findings"], preview["findings"]);

    // Excluding the paths pushes too; only the warnings are left.
    let mut args: Vec<String> = zstd.iter().map(|s| s.to_string()).collect();
    for path in planted.secret_paths() {
        args.extend(["--exclude".to_string(), path]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let excluded = commit_output(
        &env,
        &env.containerd_socket,
        &namespace,
        "desk",
        &target("excluded"),
        &refs,
    );
    outputs.push_str(&text(&excluded));
    assert!(excluded.status.success(), "{}", stderr(&excluded));
    let result = json_of(&excluded);
    let left: Vec<&str> = result["findings"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["huge-cache", "huge-log"]);

    planted.assert_absent("the agent's output", &outputs);
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn the_diff_service_fallback_is_scanned_too() {
    let env = TestEnv::get();
    let namespace = unique("scan-native");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("native");
    ctr.run_detached("native", busybox, "native", &["sleep", "3600"]);
    let planted = plant_few(&container_rootfs(&namespace, "native"));
    let target = format!("{}/{namespace}/native:1", env.registry);

    let refused = commit_output(
        &env,
        &env.containerd_socket,
        &namespace,
        "native",
        &target,
        &[],
    );
    assert!(!refused.status.success(), "pushed through the Diff service");
    assert_eq!(json_of(&refused)["findings"], planted.expected());
    assert_nothing_pushed(&format!("{namespace}/native"));

    // A preview cannot read this snapshotter without pausing: refused.
    let output = preview_output(&env.containerd_socket, &namespace, "native", &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("previews read the overlay snapshotter"),
        "{}",
        stderr(&output)
    );

    let mut args = Vec::new();
    for ack in planted.acknowledgements() {
        args.extend(["--acknowledge".to_string(), ack]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let pushed = commit_output(
        &env,
        &env.containerd_socket,
        &namespace,
        "native",
        &target,
        &refs,
    );
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let result = json_of(&pushed);
    assert_eq!(result["method"], "diff-service");
    assert_eq!(result["findings"]["findings"], planted.expected());
    planted.assert_absent("the agent's output", &(text(&refused) + &text(&pushed)));
}

/// `POST /v1/preview` with a token for this agent.
async fn post_preview(agent: &Agent, token: Option<&str>, body: String) -> (u16, Value) {
    let mut request = http_client()
        .post(format!("{}/v1/preview", agent.url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST /v1/preview");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_corpus_finds_no_secret_and_the_preview_endpoint_holds_its_limits() {
    let env = TestEnv::get();
    let namespace = unique("scan-corpus");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.desktop("corpus", busybox).owner("alice").start();
    let native = ctr.import_busybox("native");
    ctr.run_detached("native", native, "native", &["sleep", "3600"]);

    // This machine's /usr/share, copied into the desktop: documentation,
    // man pages, certificates, public keys.
    let rootfs = container_rootfs(&namespace, "corpus");
    std::fs::create_dir_all(rootfs.join("usr")).unwrap();
    let copied = std::process::Command::new("cp")
        .args(["-a", "/usr/share"])
        .arg(rootfs.join("usr"))
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );

    let api = Api::start(ApiOptions::sqlite(&env.registry, 30)).await;
    let agent = Agent::start(&env, &api, "node-1", &namespace);
    let token = agent.api_token(&api);
    let alice = api.token("alice", "speaker", &["workshop"]);
    api.wait_for_running_container(&alice, "corpus").await;

    let body = json!({"containerId": "corpus"}).to_string();
    let started = Instant::now();
    let (status, answer) = post_preview(&agent, Some(&token), body.clone()).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    let secrets: Vec<&Value> = answer["findings"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "SECRET")
        .collect();
    assert!(
        secrets.is_empty(),
        "the clean corpus has secrets: {secrets:?}"
    );
    let read = agent
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("secret scan read"))
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "clean corpus: {} files, {} directories, {} bytes previewed in {elapsed:?}; {} warnings; scan: {read}",
        answer["files"],
        answer["directories"],
        answer["totalBytes"],
        answer["findings"]["findings"].as_array().unwrap().len()
    );
    assert!(
        answer["files"].as_u64().unwrap() > 10_000,
        "{}",
        answer["files"]
    );
    // The CLI's preview is the same walk.
    let cli = preview(&env.containerd_socket, &namespace, "corpus", &[]);
    assert_eq!(cli["findings"], answer["findings"]);
    assert_eq!(cli["totalBytes"], answer["totalBytes"]);

    // At most two at once; the others are refused, never queued.
    let answers =
        futures::future::join_all((0..6).map(|_| post_preview(&agent, Some(&token), body.clone())))
            .await;
    let codes: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    assert!(codes.contains(&429) && codes.contains(&200), "{codes:?}");
    let refused = answers.iter().find(|(s, _)| *s == 429).unwrap();
    assert_eq!(refused.1["code"], "RATE_LIMITED");

    // Hostile requests.
    let huge_exclude = json!({"containerId": "corpus", "excludes": ["a".repeat(5000)]});
    let many_excludes = json!({"containerId": "corpus", "excludes": vec!["/x"; 65]});
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for (body, status, code) in [
        ("{\"containerId\":".to_string(), 400, "BAD_USER_INPUT"),
        (nested, 400, "BAD_USER_INPUT"),
        (
            json!({"container": "corpus"}).to_string(),
            400,
            "BAD_USER_INPUT",
        ),
        (huge_exclude.to_string(), 400, "BAD_USER_INPUT"),
        (many_excludes.to_string(), 400, "BAD_USER_INPUT"),
        (
            json!({"containerId": "corpus", "excludes": ["/a/["]}).to_string(),
            400,
            "BAD_USER_INPUT",
        ),
        (
            json!({"containerId": "no-such"}).to_string(),
            404,
            "NOT_FOUND",
        ),
        (
            json!({"containerId": "native"}).to_string(),
            422,
            "UNSUPPORTED_SNAPSHOTTER",
        ),
    ] {
        let (got, answer) = post_preview(&agent, Some(&token), body).await;
        assert_eq!(got, status, "{answer}");
        if !code.is_empty() {
            assert_eq!(answer["code"], code, "{answer}");
        }
    }
    // Over the body limit. The agent may answer 413 and close before the
    // client has written the 3 MiB: the client sees the 413 or, when the
    // close wins the race with its write, a broken pipe.
    let oversize = format!(
        "{{\"containerId\":\"corpus\",\"pad\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    let sent = http_client()
        .post(format!("{}/v1/preview", agent.url()))
        .header("content-type", "application/json")
        .bearer_auth(&token)
        .body(oversize)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or_default();
            assert_eq!(
                (status, &answer["code"]),
                (413, &json!("PAYLOAD_TOO_LARGE"))
            );
        }
        Err(e) => assert!(
            e.is_request() || e.is_body(),
            "the 3 MiB preview failed otherwise than by the agent's early close: {e:?}"
        ),
    }
    let (status, _) =
        post_preview(&agent, None, json!({"containerId": "corpus"}).to_string()).await;
    assert_eq!(status, 401);

    // Through the API: a snapshot of a desktop holding a secret fails with
    // SECRETS_FOUND; the reason names the file, never the value.
    let value = e2e_tests::secrets::github_token();
    ctr.exec(
        "corpus",
        &format!("echo 'export GITHUB_TOKEN={value}' > /root/.ash_history"),
    );
    let id = api
        .create_snapshot_with(
            &alice,
            json!({"containerId": "corpus", "target": format!("{}/workshops/alice/corpus:v1", env.registry),
                   "excludes": ["/usr/share"], "compression": "ZSTD"}),
        )
        .await;
    let snapshot = api
        .wait_for_end(&alice, &id, Duration::from_secs(120))
        .await;
    assert_eq!(snapshot["status"], "FAILED", "{snapshot}");
    assert_eq!(snapshot["failureCode"], "SECRETS_FOUND", "{snapshot}");
    let reason = snapshot["failureReason"].as_str().unwrap();
    assert!(
        reason.contains("/root/.ash_history:1: shell-history-secret"),
        "{reason}"
    );
    for text in [reason.to_string(), agent.log(), api.all_logs()] {
        assert!(!text.contains(&value), "the planted value leaked");
    }
}
