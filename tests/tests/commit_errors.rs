//! Every way `dcs-agent commit` can fail, through the real binary against
//! the real containerd and registries: a non-zero exit code, nothing on
//! stdout, and one sentence on stderr that starts with `dcs-agent: ` and
//! says what went wrong. Failures must leave nothing behind: no tag in the
//! registry, no lease, no half-written content.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::{Container, CreateContainerRequest};
use e2e_tests::tmpfs::Tmpfs;
use e2e_tests::{Ctr, TestEnv, agent, agent_binary, commit, commit_output, unique};

/// Checks the error contract and that the message says all of `expected`;
/// returns the message.
#[track_caller]
fn assert_refused(output: &Output, expected: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "dcs-agent succeeded where it must fail; stdout: {stdout}"
    );
    assert!(
        stdout.is_empty(),
        "stdout must be empty on failure, got: {stdout:?} (stderr: {stderr:?})"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("dcs-agent: "),
        "stderr must be one sentence starting with \"dcs-agent: \", got: {stderr:?}"
    );
    for words in expected {
        assert!(
            stderr.contains(words),
            "the message must say {words:?}, got: {stderr:?}"
        );
    }
    stderr.trim().to_string()
}

/// A namespace with the busybox image and one running container.
fn running_container(env: &TestEnv, prefix: &str) -> (Ctr, String) {
    let ctr = Ctr::new(&env.containerd_socket, &unique(prefix));
    let image = ctr.import_busybox("overlayfs");
    let id = unique("c");
    ctr.run_detached(&id, image, "overlayfs", &["sleep", "1000"]);
    ctr.exec(
        &id,
        "echo changed > /etc/motd && mkdir -p /data && echo x > /data/x",
    );
    (ctr, id)
}

/// Leases this agent created (`dcs-commit-*`) still in the namespace.
fn agent_leases(ctr: &Ctr) -> Vec<String> {
    ctr.run(&["leases", "ls", "-q"])
        .lines()
        .filter(|l| l.starts_with("dcs-commit-"))
        .map(String::from)
        .collect()
}

/// `skopeo inspect` of a tag: `Ok` when the registry has it, `Err(stderr)`
/// when it does not.
fn inspect_tag(reference: &str, authfile: Option<&Path>) -> Result<String, String> {
    let mut command = Command::new("skopeo");
    command.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(file) = authfile {
        command.arg("--authfile").arg(file);
    }
    let output = command
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo (apt-get install skopeo)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

#[track_caller]
fn assert_no_tag(reference: &str, authfile: Option<&Path>) {
    match inspect_tag(reference, authfile) {
        Ok(manifest) => panic!("a failed push left the tag {reference}: {manifest}"),
        Err(stderr) => assert!(
            stderr.contains("manifest unknown") || stderr.contains("not found"),
            "skopeo could not tell whether {reference} exists: {stderr}\n\
             the registries' logs end with:\n{}",
            registry_log_tails()
        ),
    }
}

/// The last lines of both test registries' logs: an unexpected registry
/// answer (CI once saw a bare 400 from the auth registry) is explained by
/// what the registry itself logged.
fn registry_log_tails() -> String {
    let env_dir = std::path::PathBuf::from(std::env::var_os("DCS_ENV_DIR").unwrap_or_default());
    ["registry", "registry-auth"]
        .iter()
        .map(|name| {
            let log = env_dir.join(name).join("registry.log");
            let text = std::fs::read_to_string(&log).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            format!("--- {}\n{tail}", log.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn unknown_container() {
    let env = TestEnv::get();
    let namespace = unique("err-unknown");
    let _ctr = Ctr::new(&env.containerd_socket, &namespace);
    let output = commit_output(
        &env,
        &env.containerd_socket,
        &namespace,
        "no-such-container",
        &format!("{}/e2e/{namespace}:t", env.registry),
        &[],
    );
    assert_refused(
        &output,
        &[&format!(
            "container \"no-such-container\" not found in containerd namespace \"{namespace}\""
        )],
    );
}

#[test]
fn container_without_image() {
    let env = TestEnv::get();
    let namespace = unique("err-noimage");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let id = unique("bare");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let channel = containerd_client::connect(&env.containerd_socket)
            .await
            .expect("connect to containerd");
        let mut container = Container {
            id: id.clone(),
            image: String::new(),
            runtime: Some(Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
            spec: Some(Default::default()),
            snapshotter: "overlayfs".into(),
            snapshot_key: String::new(),
            ..Default::default()
        };
        if let Some(spec) = container.spec.as_mut() {
            spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Spec".into();
            spec.value = b"{}".to_vec();
        }
        let mut request = containerd_client::tonic::Request::new(CreateContainerRequest {
            container: Some(container),
        });
        request.metadata_mut().insert(
            "containerd-namespace",
            namespace.parse().expect("namespace header"),
        );
        ContainersClient::new(channel)
            .create(request)
            .await
            .expect("create a container record without an image");
    });
    assert!(
        ctr.run(&["containers", "ls", "-q"]).contains(&id),
        "the bare container record is missing"
    );

    let output = commit_output(
        &env,
        &env.containerd_socket,
        &namespace,
        &id,
        &format!("{}/e2e/{namespace}:t", env.registry),
        &[],
    );
    assert_refused(&output, &[&format!("container \"{id}\" has no image")]);
    assert!(agent_leases(&ctr).is_empty());
}

#[test]
fn bad_target_references_are_refused_before_anything_else() {
    let env = TestEnv::get();
    let namespace = unique("err-ref");
    let _ctr = Ctr::new(&env.containerd_socket, &namespace);
    let digest = format!("sha256:{}", "a".repeat(64));
    let digest_ref = format!("{}/e2e/x@{digest}", env.registry);
    for (reference, reason) in [
        ("UPPER/Case:tag", "invalid"),
        ("a@sha256:bad", "invalid"),
        ("reg.example/x:tag with space", "invalid"),
        (digest_ref.as_str(), "push to a tag, not to a digest"),
    ] {
        // The container does not exist either: the reference is checked first.
        let output = commit_output(
            &env,
            &env.containerd_socket,
            &namespace,
            "no-such-container",
            reference,
            &[],
        );
        assert_refused(
            &output,
            &[&format!("invalid image reference \"{reference}\""), reason],
        );
    }
}

#[test]
fn unreachable_registry() {
    let env = TestEnv::get();
    let (ctr, id) = running_container(&env, "err-unreach");
    let target = format!("127.0.0.1:1/e2e/{}:t", ctr.namespace);
    let output = commit_output(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &target,
        // Paused while the change is read: the failure must not leave the
        // task paused.
        &["--insecure-registry", "127.0.0.1:1"],
    );
    assert_refused(
        &output,
        &["registry 127.0.0.1:1 is unreachable", "Connection refused"],
    );
    assert!(
        agent_leases(&ctr).is_empty(),
        "the failed commit left its lease: {:?}",
        agent_leases(&ctr)
    );
    // The task was not left paused by the failure either.
    assert_running(&ctr, &id);
}

#[track_caller]
fn assert_running(ctr: &Ctr, id: &str) {
    let tasks = ctr.run(&["tasks", "ls"]);
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with(id) && l.contains("RUNNING")),
        "the container must still run after the failed commit: {tasks}"
    );
}

#[test]
fn auth_registry_without_credentials_is_401() {
    let env = TestEnv::get();
    let (ctr, id) = running_container(&env, "err-401-none");
    let target = format!("{}/e2e/{}:t", env.auth_registry, ctr.namespace);
    let output = commit_output(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &target,
        &["--no-pause"],
    );
    assert_no_tag(&target, Some(&env.auth_config));
    assert!(agent_leases(&ctr).is_empty());
    assert_refused(
        &output,
        &[
            &format!(
                "registry {} refused the credentials (401 Unauthorized)",
                env.auth_registry
            ),
            "--registry-config",
        ],
    );
}

#[test]
fn auth_registry_with_bad_credentials_is_401() {
    let env = TestEnv::get();
    let (ctr, id) = running_container(&env, "err-401-bad");
    let target = format!("{}/e2e/{}:t", env.auth_registry, ctr.namespace);
    let config = env.bad_auth_config.to_string_lossy().to_string();
    let output = commit_output(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &target,
        &["--no-pause", "--registry-config", &config],
    );
    assert_no_tag(&target, Some(&env.auth_config));
    assert!(agent_leases(&ctr).is_empty());
    let message = assert_refused(
        &output,
        &[&format!(
            "registry {} refused the credentials (401 Unauthorized)",
            env.auth_registry
        )],
    );
    // The password never shows.
    let bad = std::fs::read_to_string(&env.bad_auth_config).expect("bad config");
    assert!(!message.contains(&bad), "{message}");
}

#[test]
fn auth_registry_with_good_credentials_succeeds() {
    let env = TestEnv::get();
    let (ctr, id) = running_container(&env, "err-auth-ok");
    let target = format!("{}/e2e/{}:t", env.auth_registry, ctr.namespace);
    let config = env.auth_config.to_string_lossy().to_string();
    assert_no_tag(&target, Some(&env.auth_config));
    let result = commit(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &target,
        &["--no-pause", "--registry-config", &config],
    );
    let manifest = inspect_tag(&target, Some(&env.auth_config))
        .unwrap_or_else(|e| panic!("the pushed tag {target} is missing: {e}"));
    let digest = e2e_tests::layer::sha256_hex(manifest.as_bytes());
    assert_eq!(result["manifestDigest"].as_str(), Some(digest.as_str()));
    assert!(agent_leases(&ctr).is_empty());
}

/// A registry that lets anyone in (`GET /v2/` is 200) and then denies
/// everything with 403 `DENIED`, as registries with per-repository
/// authorisation do. Docker's registry with htpasswd cannot answer 403 (any
/// authenticated user may push anywhere), so this small stand-in does.
fn forbidding_registry() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_forbidden(stream));
        }
    });
    address
}

fn serve_forbidden(stream: TcpStream) {
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut writer = stream;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    let _ = reader.read_exact(&mut body);
    let head = request_line.starts_with("HEAD ");
    let (status, body) = if request_line.starts_with("GET /v2/ ") {
        ("200 OK", "{}".to_string())
    } else {
        (
            "403 Forbidden",
            r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#
                .to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if head { "" } else { body.as_str() }
    );
    let _ = writer.write_all(response.as_bytes());
}

#[test]
fn registry_denial_is_403() {
    let env = TestEnv::get();
    let registry = forbidding_registry();
    let (ctr, id) = running_container(&env, "err-403");
    let repository = format!("e2e/{}", ctr.namespace);
    let output = commit_output(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &format!("{registry}/{repository}:t"),
        &["--no-pause", "--insecure-registry", &registry],
    );
    assert!(agent_leases(&ctr).is_empty());
    assert_refused(
        &output,
        &[&format!(
            "registry {registry} denied pushing to {repository} (403 Forbidden)"
        )],
    );
}

#[test]
fn disk_full_on_the_small_containerd() {
    let env = TestEnv::get();
    let ctr = Ctr::new(&env.small_containerd_socket, &unique("err-full"));
    let image = ctr.import_busybox("overlayfs");
    let id = unique("c");
    ctr.run_detached(&id, image, "overlayfs", &["sleep", "1000"]);
    // 40 MB that do not compress: the upper directory fits in the 64 MiB
    // tmpfs, the upper directory plus the new layer blob do not.
    ctr.exec(
        &id,
        "dd if=/dev/urandom of=/root/big bs=1048576 count=40 2>/dev/null && sync",
    );
    let content_before = ctr.run(&["content", "ls", "-q"]);

    let output = commit_output(
        &env,
        &env.small_containerd_socket,
        &ctr.namespace,
        &id,
        &format!("{}/e2e/{}:t", env.registry, ctr.namespace),
        // Paused while the layer is written: the disk fills up during the
        // pause, and the task must be resumed all the same. The layer goes
        // into containerd only when the node keeps the image.
        &["--local-image"],
    );
    let failed_leases = agent_leases(&ctr);
    assert_refused(&output, &["no space left on device"]);
    assert!(
        failed_leases.is_empty(),
        "the failed commit left its lease: {failed_leases:?}"
    );
    assert_running(&ctr, &id);

    // The small containerd still works once the container is gone.
    ctr.run(&["tasks", "kill", "-s", "SIGKILL", &id]);
    wait_for(Duration::from_secs(10), "the task to stop", || {
        !ctr.run(&["tasks", "ls"])
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING"))
    });
    ctr.run(&["tasks", "rm", "-f", &id]);
    ctr.run(&["containers", "rm", &id]);
    let active = ctr.run(&["content", "active"]);
    assert!(
        active.lines().skip(1).all(|l| l.trim().is_empty()),
        "a half-written blob is left in the ingest area:\n{active}"
    );
    assert_eq!(
        ctr.run(&["content", "ls", "-q"]),
        content_before,
        "the failed commit left content behind"
    );
    assert!(agent_leases(&ctr).is_empty());
    assert_eq!(ctr.run_once(image, "echo still-works"), "still-works\n");
}

#[test]
fn disk_full_in_the_spool() {
    let env = TestEnv::get();
    let spool = Tmpfs::mount(16);
    let (ctr, id) = running_container(&env, "err-spool");
    // 40 MB that do not compress, into a 16 MiB spool.
    ctr.exec(
        &id,
        "dd if=/dev/urandom of=/root/big bs=1048576 count=40 2>/dev/null",
    );
    let content_before = ctr.run(&["content", "ls", "-q"]);
    let target = format!("{}/e2e/{}:spool-full", env.registry, ctr.namespace);
    let spool_dir = spool.path().join("spool").to_string_lossy().to_string();
    for pause in [&[][..], &["--no-pause"][..]] {
        let mut extra = vec!["--spool-dir", &spool_dir];
        extra.extend_from_slice(pause);
        let output = commit_output(
            &env,
            &env.containerd_socket,
            &ctr.namespace,
            &id,
            &target,
            &extra,
        );
        assert_refused(
            &output,
            &[
                "cannot keep the layer in the spool directory",
                "No space left on device",
            ],
        );
        assert_running(&ctr, &id);
        assert!(agent_leases(&ctr).is_empty());
        assert_no_tag(&target, None);
        assert_eq!(
            std::fs::read_dir(spool.path().join("spool"))
                .unwrap()
                .count(),
            0,
            "the failed commit left a file in the spool"
        );
        assert_eq!(
            ctr.run(&["content", "ls", "-q"]),
            content_before,
            "the failed commit left content in containerd"
        );
    }
    // The same commit with room in the spool succeeds.
    let result = commit(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &target,
        &[],
    );
    assert!(
        result["layer"]["size"].as_u64().unwrap() > 40 << 20,
        "{result}"
    );
}

#[test]
fn an_unusable_spool_is_refused_before_the_desktop_pauses() {
    let env = TestEnv::get();
    let (ctr, id) = running_container(&env, "err-spool-dir");
    let blocker = std::env::temp_dir().join(unique("dcs-not-a-dir"));
    std::fs::write(&blocker, b"a file where the spool should be").unwrap();
    let spool_dir = blocker.join("spool").to_string_lossy().to_string();
    let target = format!("{}/e2e/{}:spool-dir", env.registry, ctr.namespace);
    let started = Instant::now();
    let output = commit_output(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &target,
        &["--spool-dir", &spool_dir],
    );
    assert_refused(&output, &["cannot keep the layer in the spool directory"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_running(&ctr, &id);
    assert!(agent_leases(&ctr).is_empty());
    assert_no_tag(&target, None);
    std::fs::remove_file(&blocker).unwrap();
}

fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_commits_of_one_container_at_once() {
    let env = TestEnv::get();
    let (ctr, id) = running_container(&env, "err-twice");
    // Enough change that the first commit is still reading it when the
    // second one starts.
    ctr.exec(
        &id,
        "dd if=/dev/urandom of=/root/big bs=1048576 count=8 2>/dev/null",
    );
    let target = format!("{}/e2e/{}:t", env.registry, ctr.namespace);
    // The agent names a container's lock file by the SHA-256 of its
    // namespace, a NUL and its id.
    let lock_name = {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(ctr.namespace.as_bytes());
        hasher.update([0]);
        hasher.update(id.as_bytes());
        hex::encode(hasher.finalize())
    };
    let lock_file = env
        .state_dir
        .join("locks")
        .join(format!("{lock_name}.lock"));

    let first = {
        let (env, namespace, id, target) = (
            env.clone(),
            ctr.namespace.clone(),
            id.clone(),
            target.clone(),
        );
        std::thread::spawn(move || {
            commit_output(
                &env,
                &env.containerd_socket,
                &namespace,
                &id,
                &target,
                &["--no-pause"],
            )
        })
    };
    // The first holds the lock once it has written its process id there.
    let mut holder = String::new();
    wait_for(
        Duration::from_secs(20),
        "the first commit to take its lock",
        || {
            holder = std::fs::read_to_string(&lock_file).unwrap_or_default();
            !holder.trim().is_empty()
        },
    );
    let second = commit_output(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &target,
        &["--no-pause"],
    );
    let first = first.join().expect("first commit thread");
    assert!(
        first.status.success(),
        "the first commit must succeed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_refused(
        &second,
        &[
            "already running",
            &format!("(process {})", holder.trim()),
            &id,
        ],
    );
    // And the lock is free again afterwards.
    commit(
        &env,
        &env.containerd_socket,
        &ctr.namespace,
        &id,
        &target,
        &["--no-pause"],
    );
}

/// Runs each refused argument set against a running container and checks
/// that nothing happened: no image, no lease, no tag.
fn assert_refused_before_anything(prefix: &str, cases: &[(&[&str], &[&str])]) {
    let env = TestEnv::get();
    let (ctr, id) = running_container(&env, prefix);
    let images_before = ctr.run(&["images", "ls", "-q"]);
    let target = format!("{}/e2e/{}:t", env.registry, ctr.namespace);
    for (extra, expected) in cases {
        let output = commit_output(
            &env,
            &env.containerd_socket,
            &ctr.namespace,
            &id,
            &target,
            extra,
        );
        assert_refused(&output, expected);
        assert_eq!(
            ctr.run(&["images", "ls", "-q"]),
            images_before,
            "a refused commit ({extra:?}) created an image"
        );
        assert!(agent_leases(&ctr).is_empty());
        assert_no_tag(&target, None);
    }
}

#[test]
fn bad_change_instructions_are_refused_before_anything_happens() {
    assert_refused_before_anything(
        "err-change",
        &[
            (
                &["--change", "FROB x"],
                &["unknown instruction \"FROB\" in --change"],
            ),
            (
                &["--change", "CMD [\"/bin/app\","],
                &["CMD in --change", "not valid JSON"],
            ),
            (
                &["--change", "WORKDIR relative/dir"],
                &["WORKDIR in --change must be an absolute path"],
            ),
        ],
    );
}

#[test]
fn bad_exclude_globs_are_refused_before_anything_happens() {
    assert_refused_before_anything(
        "err-exclude",
        &[
            (
                &["--exclude", "/data/["],
                &["invalid exclude pattern \"/data/[\""],
            ),
            (
                &["--exclude", "/"],
                &["invalid exclude pattern \"/\"", "everything"],
            ),
        ],
    );
}

#[test]
fn missing_containerd_socket() {
    let env = TestEnv::get();
    let state = env.state_dir.to_string_lossy().to_string();
    let target = format!("{}/e2e/x:t", env.registry);
    let output = agent(&[
        "commit",
        "--containerd-socket",
        "/nonexistent",
        "--namespace",
        "default",
        "--container",
        "c",
        "--target",
        &target,
        "--state-dir",
        &state,
    ]);
    assert_refused(&output, &["cannot connect to containerd at /nonexistent"]);
}

/// A socket that accepts connections and never answers, like a containerd
/// that hangs: the agent must give up with a message, not hang forever.
#[test]
fn silent_containerd_socket() {
    let env = TestEnv::get();
    let dir = std::env::temp_dir().join(unique("dcs-e2e-silent"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("containerd.sock");
    let _listener = UnixListener::bind(&socket).expect("bind a unix socket");
    let state = env.state_dir.to_string_lossy().to_string();
    let target = format!("{}/e2e/x:t", env.registry);
    let mut child = Command::new(agent_binary())
        .args(["commit", "--containerd-socket"])
        .arg(&socket)
        .args([
            "--namespace",
            "default",
            "--container",
            "c",
            "--target",
            &target,
            "--state-dir",
            &state,
        ])
        .env_remove("DCS_CONTAINERD_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dcs-agent");
    let limit = Duration::from_secs(25);
    let start = Instant::now();
    while child.try_wait().expect("wait for dcs-agent").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "dcs-agent still waits for a containerd that does not answer after {limit:?}; \
                 it must give up with \"cannot connect to containerd\""
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("dcs-agent output");
    let _ = std::fs::remove_dir_all(&dir);
    assert_refused(&output, &["cannot connect to containerd at"]);
}
