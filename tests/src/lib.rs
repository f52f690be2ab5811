//! Harness for the end-to-end tests: the real containerd, runc and
//! registries started by `scripts/dev-env.sh`, and the real `dcs-agent`.
//!
//! Nothing here skips: a missing daemon fails the test with a message that
//! says how to start it.

pub mod browser;
pub mod chaos;
pub mod ctr;
pub mod deploy_policy;
pub mod desktop;
pub mod fake_agent;
pub mod fake_kube;
pub mod layer;
pub mod matrix;
pub mod otlp_receiver;
pub mod secrets;
pub mod stack;
pub mod tmpfs;
pub mod tree;
pub mod webhook_receiver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use ctr::Ctr;

/// The environment `scripts/dev-env.sh start` exports.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub containerd_socket: PathBuf,
    pub small_containerd_socket: PathBuf,
    pub registry: String,
    pub auth_registry: String,
    pub auth_config: PathBuf,
    pub bad_auth_config: PathBuf,
    pub state_dir: PathBuf,
}

/// An environment variable of the test environment; fails the test with
/// how to set it up when it is missing.
pub fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the end-to-end tests need the real test environment; \
             run `scripts/dev-env.sh start && source .dcs-env/env.sh` first"
        )
    })
}

impl TestEnv {
    pub fn get() -> Self {
        let env = Self {
            containerd_socket: required("DCS_CONTAINERD_SOCKET").into(),
            small_containerd_socket: required("DCS_SMALL_CONTAINERD_SOCKET").into(),
            registry: required("DCS_REGISTRY"),
            auth_registry: required("DCS_AUTH_REGISTRY"),
            auth_config: required("DCS_AUTH_REGISTRY_CONFIG").into(),
            bad_auth_config: required("DCS_AUTH_REGISTRY_BAD_CONFIG").into(),
            state_dir: PathBuf::from(required("DCS_ENV_DIR")).join("agent-state"),
        };
        for socket in [&env.containerd_socket, &env.small_containerd_socket] {
            assert!(
                socket.exists(),
                "containerd socket {} is missing: run `scripts/dev-env.sh start`",
                socket.display()
            );
        }
        env
    }
}

/// The host's view of a running container's root file system, in the main
/// test containerd (`DCS_CONTAINERD_SOCKET`).
/// Compiles a C program statically (it runs in a busybox image, which
/// has no libc), as `dir/<name>`.
pub fn compile_static_c(dir: &Path, name: &str, source: &str) -> PathBuf {
    let source_path = dir.join(format!("{name}.c"));
    std::fs::write(&source_path, source).expect("write the C source");
    let binary = dir.join(name);
    let output = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source_path)
        .output()
        .expect("run gcc (Debian: gcc, libc6-dev)");
    assert!(
        output.status.success(),
        "cannot build {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

pub fn container_rootfs(namespace: &str, id: &str) -> PathBuf {
    PathBuf::from(required("DCS_ENV_DIR"))
        .join("containerd/state/io.containerd.runtime.v2.task")
        .join(namespace)
        .join(id)
        .join("rootfs")
}

/// Sets an extended attribute on `path` itself (not on what a symlink
/// names), from the host: busybox has no setfattr.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap_or_else(|e| {
        panic!(
            "cannot set xattr {name} on {} from the host: {e}",
            path.display()
        )
    });
}

/// A name unique to this test run, usable as namespace, container id or
/// repository component.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// The directory holding this build's binaries: `target/<profile>` for a
/// test (`target/<profile>/deps/<test>`) and for a binary of this crate
/// (`target/<profile>/chaos`) alike.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own executable path");
    let mut dir = exe.parent().expect("executable directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Binary `name` in `dir`, or a message saying it is missing and how to
/// build it.
pub fn binary_in(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it first with `cargo build --workspace --bins`",
            path.display()
        ))
    }
}

/// A binary of this workspace's build (`dcs-agent`, `dcs-api`); fails the
/// test when it has not been built.
pub fn built_binary(name: &str) -> PathBuf {
    binary_in(&build_dir(), name).unwrap_or_else(|missing| panic!("{missing}"))
}

/// The `dcs-agent` binary of this workspace's build, or the one named by
/// `DCS_TEST_AGENT_BINARY` (to run a test against another version, e.g. to
/// show that an attack test finds what an older agent let through).
pub fn agent_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("DCS_TEST_AGENT_BINARY") {
        return PathBuf::from(binary);
    }
    built_binary("dcs-agent")
}

/// Waits for `attempt` to give a value, trying every `every`: a bounded
/// wait. Once `timeout` has passed, fails the test with what `explain`
/// makes of the last attempt's answer.
pub async fn poll<T, L>(
    timeout: Duration,
    every: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, L>,
    explain: impl FnOnce(L) -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match attempt().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?}: {}", explain(last));
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `dcs-agent` with these arguments.
pub fn agent(args: &[&str]) -> Output {
    Command::new(agent_binary())
        .args(args)
        .env_remove("DCS_CONTAINERD_SOCKET")
        .output()
        .expect("run dcs-agent")
}

/// Runs `dcs-agent commit` and returns its JSON, failing the test with the
/// agent's stderr when it fails.
pub fn commit(
    env: &TestEnv,
    socket: &Path,
    namespace: &str,
    container: &str,
    target: &str,
    extra: &[&str],
) -> serde_json::Value {
    let output = commit_output(env, socket, namespace, container, target, extra);
    assert!(
        output.status.success(),
        "dcs-agent commit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("commit prints JSON")
}

/// Runs `dcs-agent commit` and returns its raw output.
pub fn commit_output(
    env: &TestEnv,
    socket: &Path,
    namespace: &str,
    container: &str,
    target: &str,
    extra: &[&str],
) -> Output {
    let socket = socket.to_string_lossy().to_string();
    let state = env.state_dir.to_string_lossy().to_string();
    let mut args = vec![
        "commit",
        "--containerd-socket",
        &socket,
        "--namespace",
        namespace,
        "--container",
        container,
        "--target",
        target,
        "--insecure-registry",
        &env.registry,
        "--insecure-registry",
        &env.auth_registry,
        "--state-dir",
        &state,
    ];
    args.extend_from_slice(extra);
    agent(&args)
}

/// Runs `dcs-agent preview` of a container; its raw output.
pub fn preview_output(socket: &Path, namespace: &str, container: &str, extra: &[&str]) -> Output {
    let socket = socket.to_string_lossy().to_string();
    let mut args = vec![
        "preview",
        "--containerd-socket",
        &socket,
        "--namespace",
        namespace,
        "--container",
        container,
    ];
    args.extend_from_slice(extra);
    agent(&args)
}

/// Runs `dcs-agent preview` and returns its JSON, failing the test with
/// the agent's stderr when it fails.
pub fn preview(
    socket: &Path,
    namespace: &str,
    container: &str,
    extra: &[&str],
) -> serde_json::Value {
    let output = preview_output(socket, namespace, container, extra);
    assert!(
        output.status.success(),
        "dcs-agent preview failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("preview prints JSON")
}

/// The test image: static busybox, built by `scripts/make-test-image.sh`
/// once per test process.
pub fn busybox_archive() -> PathBuf {
    static ARCHIVE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("dcs-e2e-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let archive = dir.join("busybox.tar");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-test-image.sh");
            let output = Command::new("bash")
                .arg(script)
                .arg(&archive)
                .arg(BUSYBOX_IMAGE)
                .output()
                .expect("run make-test-image.sh");
            assert!(
                output.status.success(),
                "make-test-image.sh failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            archive
        })
        .clone()
}

pub const BUSYBOX_IMAGE: &str = "localhost/dcs-test/busybox:1";
