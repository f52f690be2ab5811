//! Look before you push (issue 11) through the whole stack: the real
//! `dcs-api` on PostgreSQL, the real `dcs-agent` on real containerd and
//! runc, the test registry, and a webhook receiver. A desktop holding a
//! secret of every kind the rules know is previewed and snapshotted over
//! GraphQL: the snapshot ends `FAILED` with `SECRETS_FOUND` and the
//! preview's findings, nothing reaches the registry, a partial
//! acknowledgement still fails, acknowledging every secret (or excluding
//! their paths) pushes. A hostile desktop (links to host files full of
//! tokens, its home a link to a host directory, an 8 GiB file, 20,000
//! files) previews without reading outside the container. No planted value
//! is in any GraphQL answer, the database, the logs or a webhook body.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_tests::secrets::{Planted, host_token_file, plant_everything, put, random};
use e2e_tests::stack::{
    Agent, Api, ApiOptions, Database, assert_nothing_pushed, error_code, int64, registry_digest,
    skopeo_inspect,
};
use e2e_tests::webhook_receiver::{Receiver, ok};
use e2e_tests::{Ctr, TestEnv, container_rootfs, required, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(180);

const PREVIEW: &str = "query($input: PreviewSnapshotInput!) { previewSnapshot(input: $input) {
    files directories whiteouts links other totalBytes
    biggestFiles { path bytes } biggestDirectories { path bytes }
    excluded { pattern entries files bytes }
    findings { count secretCount warningCount truncated
               findings { path rule severity line size suggestedExclude } } } }";

const SNAPSHOT: &str = "query($id: ID!) { snapshot(id: $id) {
    id status failureCode failureReason manifestDigest layerDigest target
    findings { count secretCount warningCount truncated
               findings { path rule severity line size suggestedExclude } } } }";

/// The API, its database, an agent, a desktop of alice's and a webhook
/// receiver; every GraphQL answer the test got is kept in `transcript`.
struct Stack {
    env: TestEnv,
    db: Database,
    api: Api,
    agent: Agent,
    ctr: Ctr,
    receiver: Receiver,
    alice: String,
    transcript: String,
}

impl Stack {
    async fn start(prefix: &str) -> Self {
        let env = TestEnv::get();
        let db = Database::fresh();
        let api = Api::builder(ApiOptions::postgres(&db, &env.registry, 30))
            .args(["--webhook-allow", "127.0.0.0/8", "--webhook-allow-http"])
            .start()
            .await;
        let ctr = Ctr::new(&env.containerd_socket, &unique(prefix));
        let agent = Agent::start(&env, &api, "node-1", &ctr.namespace);
        let receiver = Receiver::start(ok()).await;
        let admin = api.token("root", "admin", &[]);
        api.create_webhook_endpoint(
            &admin,
            &receiver.url("/hooks"),
            &["SNAPSHOT_PUSHED", "SNAPSHOT_FAILED"],
        )
        .await;
        let alice = api.token("alice", "speaker", &["workshop"]);
        Self {
            env,
            db,
            api,
            agent,
            ctr,
            receiver,
            alice,
            transcript: String::new(),
        }
    }

    /// A running desktop of alice's, seen by the API.
    async fn desktop(&self, id: &str) -> std::path::PathBuf {
        let busybox = self.ctr.import_busybox("overlayfs");
        self.ctr
            .desktop(id, busybox)
            .pod(&unique("pod"))
            .owner("alice")
            .start();
        self.api.wait_for_running_container(&self.alice, id).await;
        container_rootfs(&self.ctr.namespace, id)
    }

    fn target(&self, desk: &str, tag: &str) -> String {
        format!("{}/{}:{tag}", self.env.registry, self.repository(desk))
    }

    fn repository(&self, desk: &str) -> String {
        format!("workshops/alice/{}-{desk}", self.ctr.namespace)
    }

    /// A GraphQL request as alice; the whole answer, kept in the transcript.
    async fn ask(&mut self, query: &str, variables: Value) -> Value {
        let answer = self.api.graphql(Some(&self.alice), query, variables).await;
        self.transcript.push_str(&answer.to_string());
        answer
    }

    async fn preview(&mut self, input: Value) -> Value {
        let answer = self.ask(PREVIEW, json!({ "input": input })).await;
        assert!(answer["errors"].is_null(), "previewSnapshot: {answer}");
        answer["data"]["previewSnapshot"].clone()
    }

    /// `createSnapshot` with this input, waited for to its end.
    async fn snapshot(&mut self, input: Value) -> Value {
        let id = self.api.create_snapshot_with(&self.alice, input).await;
        self.api.wait_for_end(&self.alice, &id, WAIT).await;
        let answer = self.ask(SNAPSHOT, json!({ "id": id })).await;
        assert!(answer["errors"].is_null(), "snapshot: {answer}");
        answer["data"]["snapshot"].clone()
    }

    /// Everything the stack wrote down: API and agent logs, a dump of the
    /// database, the webhook bodies and every GraphQL answer.
    fn everything(&self) -> Vec<(&'static str, String)> {
        let dump = Command::new("pg_dump")
            .args(["--data-only", "--no-owner"])
            .arg(&self.db.url)
            .output()
            .expect("run pg_dump (PostgreSQL client)");
        assert!(
            dump.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let hooks: String = self
            .receiver
            .requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
            .collect();
        vec![
            ("the API's logs", self.api.all_logs()),
            ("the agent's log", self.agent.log()),
            (
                "the database",
                String::from_utf8_lossy(&dump.stdout).to_string(),
            ),
            ("the webhook bodies", hooks),
            ("the GraphQL answers", self.transcript.clone()),
        ]
    }
}

/// Findings as the agent's JSON has them: `Int64` sizes (strings in
/// GraphQL) as numbers.
fn normalised(findings: &Value) -> Value {
    let mut findings = findings.clone();
    for finding in findings.as_array_mut().expect("a list of findings") {
        if !finding["size"].is_null() {
            finding["size"] = json!(int64(&finding["size"]));
        }
    }
    findings
}

fn acknowledgements(planted: &Planted) -> Vec<Value> {
    planted
        .acknowledgements()
        .iter()
        .map(|ack| {
            let (rule, path) = ack.split_once(':').unwrap();
            json!({"rule": rule, "path": path})
        })
        .collect()
}

fn secrets_of(planted: &Planted) -> usize {
    planted.acknowledgements().len()
}

/// The webhook bodies of one snapshot, waiting for `count` of them.
async fn webhook_bodies(receiver: &Receiver, snapshot: &str, count: usize) -> Vec<Value> {
    e2e_tests::poll(
        Duration::from_secs(60),
        Duration::from_millis(50),
        async || {
            let bodies: Vec<Value> = receiver
                .requests()
                .iter()
                .map(|r| r.json())
                .filter(|b| b["data"]["snapshotId"] == snapshot)
                .collect();
            if bodies.len() >= count {
                Ok(bodies)
            } else {
                Err(receiver.requests().len())
            }
        },
        |got| format!("{count} webhook(s) of snapshot {snapshot}; the receiver got {got} in all"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_refused_through_the_api_and_pushed_once_acknowledged_or_excluded() {
    let mut stack = Stack::start("scan-api").await;
    let rootfs = stack.desktop("desk").await;
    let scratch = std::env::temp_dir().join(unique("dcs-scan-api"));
    std::fs::create_dir_all(&scratch).unwrap();
    let planted = plant_everything(&rootfs, &scratch);
    let secrets = secrets_of(&planted);
    let warnings = planted.findings.len() - secrets;
    assert!(secrets > 20 && warnings == 2, "{secrets} {warnings}");

    // The preview shows every planted finding, with its counts.
    let preview = stack.preview(json!({"containerId": "desk"})).await;
    let report = &preview["findings"];
    assert_eq!(
        normalised(&report["findings"]),
        planted.expected(),
        "preview findings"
    );
    assert_eq!(report["count"], planted.findings.len());
    assert_eq!(report["secretCount"], secrets);
    assert_eq!(report["warningCount"], warnings);
    assert_eq!(report["truncated"], false);
    assert!(preview["files"].as_u64().unwrap() >= planted.findings.len() as u64);
    assert!(int64(&preview["totalBytes"]) > 0);

    // A snapshot is refused with the same findings; nothing is pushed.
    let repository = stack.repository("desk");
    let refused = stack
        .snapshot(
            json!({"containerId": "desk", "target": stack.target("desk", "refused"),
                         "compression": "ZSTD"}),
        )
        .await;
    assert_eq!(refused["status"], "FAILED", "{refused}");
    assert_eq!(refused["failureCode"], "SECRETS_FOUND", "{refused}");
    assert!(refused["manifestDigest"].is_null(), "{refused}");
    assert_eq!(
        refused["findings"], preview["findings"],
        "the refusal's findings are not the preview's"
    );
    let reason = refused["failureReason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{secrets} secrets found")),
        "{reason}"
    );
    assert_nothing_pushed(&repository);
    assert!(skopeo_inspect(&stack.target("desk", "refused")).is_err());
    let failed = webhook_bodies(&stack.receiver, refused["id"].as_str().unwrap(), 1).await;
    assert_eq!(failed[0]["type"], "snapshot.failed", "{}", failed[0]);
    assert_eq!(failed[0]["data"]["findingCount"], planted.findings.len());
    assert_eq!(failed[0]["data"]["secretFindingCount"], secrets);

    // One secret left unacknowledged: still refused, still nothing pushed.
    let all = acknowledgements(&planted);
    let partial = stack
        .snapshot(
            json!({"containerId": "desk", "target": stack.target("desk", "partial"),
                         "compression": "ZSTD", "acknowledgeFindings": all[1..]}),
        )
        .await;
    assert_eq!(partial["status"], "FAILED", "{partial}");
    assert_eq!(partial["failureCode"], "SECRETS_FOUND", "{partial}");
    let reason = partial["failureReason"].as_str().unwrap();
    assert!(
        reason.contains("1 secret found") && reason.contains(all[0]["path"].as_str().unwrap()),
        "{reason}"
    );
    assert_nothing_pushed(&repository);

    // Every secret acknowledged: pushed, and the report stays on the snapshot.
    let acknowledged = stack
        .snapshot(
            json!({"containerId": "desk", "target": stack.target("desk", "acknowledged"),
                         "compression": "ZSTD", "acknowledgeFindings": all}),
        )
        .await;
    assert_eq!(acknowledged["status"], "PUSHED", "{acknowledged}");
    assert_eq!(
        registry_digest(&stack.target("desk", "acknowledged")),
        acknowledged["manifestDigest"].as_str().unwrap()
    );
    assert_eq!(acknowledged["findings"], preview["findings"]);
    let pushed = webhook_bodies(&stack.receiver, acknowledged["id"].as_str().unwrap(), 1).await;
    assert_eq!(pushed[0]["type"], "snapshot.pushed", "{}", pushed[0]);
    assert_eq!(pushed[0]["data"]["secretFindingCount"], secrets);

    // Or the secrets' paths excluded: pushed, only the warnings left.
    let excluded = stack
        .snapshot(
            json!({"containerId": "desk", "target": stack.target("desk", "excluded"),
                         "compression": "ZSTD", "excludes": planted.secret_paths()}),
        )
        .await;
    assert_eq!(excluded["status"], "PUSHED", "{excluded}");
    assert_eq!(excluded["findings"]["secretCount"], 0, "{excluded}");
    assert_eq!(excluded["findings"]["warningCount"], warnings, "{excluded}");
    let pushed = webhook_bodies(&stack.receiver, excluded["id"].as_str().unwrap(), 1).await;
    assert_eq!(pushed[0]["data"]["secretFindingCount"], 0);

    // No value anywhere; webhooks carry counts, not where the keys are.
    for (what, text) in stack.everything() {
        planted.assert_absent(what, &text);
        if what == "the webhook bodies" {
            for path in planted.secret_paths() {
                assert!(
                    !text.contains(&path),
                    "a finding's path is in {what}: {path}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The bytes of a blob in the test registry's storage.
fn registry_blob(digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let path = Path::new(&required("DCS_REGISTRY_ROOT"))
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_desktop_previews_without_reading_outside_it() {
    let mut stack = Stack::start("scan-hostile").await;
    let rootfs = stack.desktop("hostile").await;
    let scratch = std::env::temp_dir().join(unique("dcs-scan-hostile"));
    std::fs::create_dir_all(&scratch).unwrap();

    // Host files full of secrets, and names in the desktop that lead to
    // them: links where credentials belong, absolute and climbing out.
    let mut host = Planted::default();
    let tokens = host_token_file(&scratch, &mut host);
    let host_home = scratch.join("home");
    let aws = format!("AKIA{}", random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
    host.values.push(aws.clone());
    put(
        &host_home,
        "/.aws/credentials",
        format!("[default]\naws_access_key_id = {aws}\n").as_bytes(),
    );
    put(
        &host_home,
        "/.git-credentials",
        format!("https://me:{aws}@example.com\n").as_bytes(),
    );
    let link = |target: &Path, name: &str| {
        let path = rootfs.join(name.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // What the image has there (the speaker's home) goes first.
        if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&path).unwrap();
        }
        std::os::unix::fs::symlink(target, &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    link(&tokens, "/root/.aws/credentials");
    link(&tokens, "/root/.bash_history");
    link(&tokens, "/srv/app/.env");
    link(&host_home, "/home/speaker");
    let climbing =
        Path::new("../../../../../../../../../../..").join(tokens.strip_prefix("/").unwrap());
    link(&climbing, "/root/.git-credentials");
    link(&tokens, "/root/.ssh/id_rsa");

    // A huge (sparse) file and many small ones.
    let huge: u64 = 8 << 30;
    put(&rootfs, "/srv/huge.bin", b"");
    std::fs::File::options()
        .write(true)
        .open(rootfs.join("srv/huge.bin"))
        .unwrap()
        .set_len(huge)
        .unwrap();
    let mut small_bytes = 0;
    for d in 0..100 {
        let dir = rootfs.join(format!("srv/many/d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            let text = format!("{d} {f}\n");
            small_bytes += text.len() as u64;
            std::fs::write(dir.join(format!("f{f:03}.txt")), text).unwrap();
        }
    }

    let started = std::time::Instant::now();
    let preview = stack.preview(json!({"containerId": "hostile"})).await;
    let elapsed = started.elapsed();
    eprintln!(
        "hostile preview: {} files, {} links, {} bytes in {elapsed:?}",
        preview["files"], preview["links"], preview["totalBytes"]
    );
    let report = &preview["findings"];
    assert_eq!(report["secretCount"], 0, "a link was followed: {report}");
    assert_eq!(report["count"], 0, "{report}");
    assert_eq!(preview["files"], 20_001, "{preview}");
    assert_eq!(preview["links"], 6, "{preview}");
    assert_eq!(
        int64(&preview["totalBytes"]),
        (huge + small_bytes) as i64,
        "{preview}"
    );
    assert_eq!(preview["biggestFiles"][0]["path"], "/srv/huge.bin");
    assert_eq!(int64(&preview["biggestFiles"][0]["bytes"]), huge as i64);

    // Hostile requests answer with codes, before any agent work.
    for (input, code) in [
        (
            json!({"containerId": "hostile", "excludes": ["/a/["]}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"containerId": "hostile", "excludes": [""]}),
            "BAD_USER_INPUT",
        ),
        (json!({"containerId": "no-such-desktop"}), "NOT_FOUND"),
    ] {
        let answer = stack.ask(PREVIEW, json!({ "input": input })).await;
        assert_eq!(error_code(&answer), code, "{input}: {answer}");
    }
    let bob = stack.api.token("bob", "speaker", &["workshop"]);
    let answer = stack
        .api
        .graphql(
            Some(&bob),
            PREVIEW,
            json!({"input": {"containerId": "hostile"}}),
        )
        .await;
    assert_eq!(
        error_code(&answer),
        "NOT_FOUND",
        "bob previewed alice's desktop: {answer}"
    );
    let answer = stack
        .api
        .graphql(None, PREVIEW, json!({"input": {"containerId": "hostile"}}))
        .await;
    assert_eq!(error_code(&answer), "UNAUTHENTICATED", "{answer}");

    // Its snapshot (the huge file excluded) pushes the links as links.
    let snapshot = stack
        .snapshot(
            json!({"containerId": "hostile", "target": stack.target("hostile", "v1"),
                         "compression": "ZSTD", "excludes": ["/srv/huge.bin"]}),
        )
        .await;
    assert_eq!(snapshot["status"], "PUSHED", "{snapshot}");
    assert_eq!(snapshot["findings"]["count"], 0, "{snapshot}");
    let manifest: Value = serde_json::from_slice(
        &skopeo_inspect(&stack.target("hostile", "v1")).expect("the pushed manifest"),
    )
    .unwrap();
    let layer = manifest["layers"].as_array().unwrap().last().unwrap();
    let compressed = registry_blob(layer["digest"].as_str().unwrap());
    let mut bytes = Vec::new();
    zstd::stream::read::Decoder::new(compressed.as_slice())
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let mut links = Vec::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        assert_ne!(path, "srv/huge.bin", "the excluded file is in the layer");
        if entry.header().entry_type() == tar::EntryType::Symlink {
            links.push(path);
        }
    }
    links.sort();
    assert_eq!(
        links,
        [
            "home/speaker",
            "root/.aws/credentials",
            "root/.bash_history",
            "root/.git-credentials",
            "root/.ssh/id_rsa",
            "srv/app/.env",
        ]
    );
    host.assert_absent("the pushed layer", &String::from_utf8_lossy(&bytes));

    for (what, text) in stack.everything() {
        host.assert_absent(what, &text);
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
