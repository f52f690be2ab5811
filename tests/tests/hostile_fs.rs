//! A hostile desktop against the agent, on real containerd, runc and a
//! registry. The speaker is root inside the container; the agent is root on
//! the node. Whatever the speaker does to their file system while a commit
//! reads it, no byte of a host file may reach a layer, the content store or
//! the registry, and the commits must still succeed.
//!
//! `DCS_HOSTILE_COMMITS` sets the commits per swap kind (default 100, so 200
//! in all; every fourth pauses, so the two-pass commit's bulk read meets
//! the swaps too). `DCS_TEST_AGENT_BINARY` runs the suite against another agent
//! build (an agent that reads by path fails it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use e2e_tests::layer::entries;
use e2e_tests::{
    Ctr, TestEnv, agent_binary, commit_output, compile_static_c, container_rootfs, required, unique,
};
use rustix::fs::{Mode, OFlags};

/// A tenant's program: swaps two names with `renameat2(RENAME_EXCHANGE)` as
/// fast as it can, for ever.
const SWAP_PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    for (;;) renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE);
}
"#;

/// Compiles the swap program, statically, so it runs in a busybox image.
fn build_swap_program(dir: &Path) -> PathBuf {
    compile_static_c(dir, "swap", SWAP_PROGRAM)
}

/// Puts the swap program into the container as `/swap`, whole (renamed into
/// place, since the container waits for it to appear).
fn install_swap(program: &Path, namespace: &str, id: &str) {
    let root = container_rootfs(namespace, id);
    let staging = root.join(".swap.partial");
    std::fs::copy(program, &staging).unwrap();
    std::fs::rename(&staging, root.join("swap")).unwrap();
}

/// Waits until a process runs with exactly this command line.
fn wait_for_process(argv: &[&str]) {
    let wanted = argv.join("\0") + "\0";
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()));
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{argv:?} did not start in the container");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The uncompressed bytes of a blob when it is gzip or zstd, else the blob.
fn readable(blob: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let decoded = if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(blob).read_to_end(&mut out)
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(blob).and_then(|mut d| d.read_to_end(&mut out))
    } else {
        return blob.to_vec();
    };
    if decoded.is_err() {
        // A partial upload: what decoded so far, then the raw bytes too.
        out.extend_from_slice(blob);
    }
    out
}

/// Files under `dir` changed since `since`, recursively.
fn files_changed_since(dir: &Path, since: SystemTime, found: &mut Vec<PathBuf>) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let Ok(meta) = item.metadata() else { continue };
        if meta.is_dir() {
            files_changed_since(&item.path(), since, found);
        } else if meta.is_file() && meta.modified().is_ok_and(|m| m >= since) {
            found.push(item.path());
        }
    }
}

/// Every blob written since `since` to the content store or the registry,
/// decompressed, searched for the canary. Returns how many were searched.
fn sweep_for_canary(since: SystemTime, canary: &[u8]) -> usize {
    let mut files = Vec::new();
    let content =
        PathBuf::from(required("DCS_CONTAINERD_ROOT")).join("io.containerd.content.v1.content");
    files_changed_since(&content, since, &mut files);
    files_changed_since(
        &PathBuf::from(required("DCS_REGISTRY_ROOT")),
        since,
        &mut files,
    );
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        assert!(
            !contains(&readable(&bytes), canary),
            "the host's canary is in {}",
            file.display()
        );
    }
    files.len()
}

/// A layer pushed to the test registry, by digest.
fn registry_blob(digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = PathBuf::from(required("DCS_REGISTRY_ROOT"))
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One swapping desktop and the names it swaps.
struct Swapped {
    id: &'static str,
    /// The regular file or directory that trades places with a link.
    a: &'static str,
    b: &'static str,
    /// What `a` is when it is not the link: `f` or `d`.
    kind: char,
}

struct Outcome {
    succeeded: usize,
    failures: Vec<String>,
    durations: Vec<Duration>,
}

/// Commits the desktop `commits` times without pausing it, checking each
/// pushed layer.
fn commit_while_swapping(
    env: &TestEnv,
    namespace: &str,
    desktop: &Swapped,
    host_dir: &Path,
    canary: &[u8],
    commits: usize,
) -> Outcome {
    let mut outcome = Outcome {
        succeeded: 0,
        failures: Vec::new(),
        durations: Vec::new(),
    };
    for i in 0..commits {
        let target = format!("{}/{namespace}/{}:{i}", env.registry, desktop.id);
        let started = Instant::now();
        let output = commit_output(
            env,
            &env.containerd_socket,
            namespace,
            desktop.id,
            &target,
            // Every fourth commit pauses: its bulk layer is read while the
            // swaps run, then its delta while the desktop is frozen.
            if i % 4 == 3 {
                &["--compression", "zstd"]
            } else {
                &["--no-pause", "--compression", "zstd"]
            },
        );
        outcome.durations.push(started.elapsed());
        if !output.status.success() {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
            assert!(
                !message.is_empty() && message.lines().count() == 1,
                "a failed commit must say why in one sentence: {message:?}"
            );
            outcome.failures.push(message);
            continue;
        }
        let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        if let Some(delta) = result["deltaLayer"]["digest"].as_str() {
            assert!(
                !contains(&readable(&registry_blob(delta)), canary),
                "commit {i} of {}: the host's file is in the delta layer",
                desktop.id
            );
        }
        let layer = readable(&registry_blob(result["layer"]["digest"].as_str().unwrap()));
        assert!(
            !contains(&layer, canary),
            "commit {i} of {}: the host's file is in the layer",
            desktop.id
        );
        let found = entries(&layer);
        for name in [desktop.a, desktop.b] {
            if let Some(entry) = found.get(name) {
                assert!(
                    entry.kind == desktop.kind || entry.kind == 'l',
                    "{name} became a {} entry",
                    entry.kind
                );
                if entry.kind == 'l' {
                    assert!(entry.link.starts_with(&*host_dir.to_string_lossy()));
                }
            }
        }
        for path in found.keys() {
            assert!(
                !path.ends_with("/secret"),
                "commit {i}: read through a link into {path}"
            );
        }
        outcome.succeeded += 1;
    }
    outcome
}

#[test]
fn swapped_names_never_leak_host_files_into_images() {
    let env = TestEnv::get();
    let commits: usize = std::env::var("DCS_HOSTILE_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let started_at = SystemTime::now() - Duration::from_secs(2);
    let namespace = unique("hostile");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");

    // The host's secret, in a directory of its own.
    let host_dir = std::env::temp_dir().join(unique("dcs-host"));
    std::fs::create_dir_all(&host_dir).unwrap();
    let canary = format!("HOST-SECRET-{}", uuid::Uuid::new_v4().simple()).into_bytes();
    std::fs::write(host_dir.join("secret"), &canary).unwrap();
    let secret = host_dir.join("secret");
    let program = build_swap_program(&host_dir);

    let desktops = [
        Swapped {
            id: "files",
            a: "p/a",
            b: "p/b",
            kind: 'f',
        },
        Swapped {
            id: "dirs",
            a: "q/a",
            b: "q/b",
            kind: 'd',
        },
    ];
    let setups = [
        // Larger than the canary: a reader that sizes the file by the name
        // and then follows the link reads the host file whole.
        format!(
            "mkdir -p /p && dd if=/dev/zero of=/p/a bs=1024 count=64 2>/dev/null && ln -s {} /p/b",
            secret.display()
        ),
        format!(
            "mkdir -p /q/a && echo inner > /q/a/inner && ln -s {} /q/b",
            host_dir.display()
        ),
    ];
    for (desktop, setup) in desktops.iter().zip(&setups) {
        let script = format!(
            "{setup} && while [ ! -e /swap ]; do sleep 0.1; done && exec /swap /{} /{}",
            desktop.a, desktop.b
        );
        ctr.run_detached(desktop.id, busybox, "overlayfs", &["sh", "-c", &script]);
        install_swap(&program, &namespace, desktop.id);
        wait_for_process(&[
            "/swap",
            &format!("/{}", desktop.a),
            &format!("/{}", desktop.b),
        ]);
    }

    // Both desktops at once: one commit at a time per desktop.
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = desktops
            .iter()
            .map(|d| {
                let (env, namespace, host_dir, canary) = (&env, &namespace, &host_dir, &canary);
                scope.spawn(move || {
                    commit_while_swapping(env, namespace, d, host_dir, canary, commits)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let searched = sweep_for_canary(started_at, &canary);
    let total = 2 * commits;
    let succeeded: usize = outcomes.iter().map(|o| o.succeeded).sum();
    let mut durations: Vec<Duration> = outcomes.iter().flat_map(|o| o.durations.clone()).collect();
    durations.sort();
    eprintln!(
        "hostile commits: {succeeded}/{total} succeeded; median {:?}, max {:?}; {searched} blobs swept; failures: {:?}",
        durations[durations.len() / 2],
        durations.last().unwrap(),
        outcomes
            .iter()
            .flat_map(|o| o.failures.iter())
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        succeeded * 100 >= total * 95,
        "only {succeeded} of {total} commits succeeded"
    );
    let _ = std::fs::remove_dir_all(&host_dir);
}

/// Previews (issue 11) read like commits: a desktop swaps a harmless file
/// with a symlink to a host file full of tokens while it is previewed, 50
/// times. No preview may report a finding (every token in the host file
/// matches a rule), count the host file's bytes or print a token.
#[test]
fn previews_of_a_swapping_desktop_never_show_the_host() {
    let env = TestEnv::get();
    let namespace = unique("hostile-preview");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    let host_dir = std::env::temp_dir().join(unique("dcs-host"));
    std::fs::create_dir_all(&host_dir).unwrap();
    let mut planted = e2e_tests::secrets::Planted::default();
    let tokens = e2e_tests::secrets::host_token_file(&host_dir, &mut planted);
    let program = build_swap_program(&host_dir);
    let swap_bytes = std::fs::metadata(&program).unwrap().len();

    let harmless = "plain text, nothing to find\n";
    let script = format!(
        "mkdir -p /p && printf '{}' > /p/a && ln -s {} /p/b && \
         while [ ! -e /swap ]; do sleep 0.1; done && exec /swap /p/a /p/b",
        harmless.replace('\n', "\\n"),
        tokens.display()
    );
    ctr.run_detached("swapper", busybox, "overlayfs", &["sh", "-c", &script]);
    install_swap(&program, &namespace, "swapper");
    wait_for_process(&["/swap", "/p/a", "/p/b"]);

    let rounds = 50;
    let mut succeeded = 0;
    for round in 0..rounds {
        let output = e2e_tests::preview_output(&env.containerd_socket, &namespace, "swapper", &[]);
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        planted.assert_absent(
            "a preview",
            &(stdout.clone() + &String::from_utf8_lossy(&output.stderr)),
        );
        if !output.status.success() {
            continue;
        }
        let preview: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            preview["findings"]["findings"],
            serde_json::json!([]),
            "round {round}: the host's file was read"
        );
        // Each name is pinned on its own: a swap between the two pins may
        // show the harmless file twice, never the host's. (The rest of the
        // change is the swap program itself.)
        let total = preview["totalBytes"].as_u64().unwrap();
        assert!(
            total <= swap_bytes + 2 * harmless.len() as u64,
            "round {round}: {total} bytes counted"
        );
        for file in preview["biggestFiles"].as_array().unwrap() {
            if file["path"].as_str().unwrap().starts_with("/p/") {
                assert_eq!(file["bytes"], harmless.len(), "round {round}: {file}");
            }
        }
        succeeded += 1;
    }
    eprintln!("hostile previews: {succeeded}/{rounds} succeeded");
    assert!(
        succeeded * 100 >= rounds * 95,
        "only {succeeded} of {rounds} previews succeeded"
    );
    let _ = std::fs::remove_dir_all(&host_dir);
}

/// The agent's open descriptors, sampled until `stop`.
fn sample_descriptors(pid: u32, stop: Arc<AtomicBool>, max: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            max.fetch_max(fds.count(), Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 10,000 levels, each with a file after its subdirectory: deeper than any
/// path the kernel takes (4,096 bytes). The commit succeeds, holds at most a
/// few hundred descriptors, and the layer has every level.
#[test]
fn a_tree_deeper_than_the_path_limit_commits() {
    const DEPTH: usize = 10_000;
    let env = TestEnv::get();
    let namespace = unique("deep");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.run_detached("deep", busybox, "overlayfs", &["sleep", "3600"]);

    // Built from the host through the container's root, by descriptors.
    let mut dir = rustix::fs::open(
        container_rootfs(&namespace, "deep"),
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    )
    .unwrap();
    for level in 0..DEPTH {
        let file = rustix::fs::openat(
            &dir,
            "z",
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&file, level.to_string().as_bytes()).unwrap();
        let _ = rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755));
        dir = rustix::fs::openat(&dir, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .unwrap();
    }
    drop(dir);

    let target = format!("{}/{namespace}/deep:1", env.registry);
    let socket = env.containerd_socket.to_string_lossy().to_string();
    let state = env.state_dir.to_string_lossy().to_string();
    let child = Command::new(agent_binary())
        .args([
            "commit",
            "--containerd-socket",
            &socket,
            "--namespace",
            &namespace,
            "--container",
            "deep",
            "--target",
            &target,
            "--insecure-registry",
            &env.registry,
            "--state-dir",
            &state,
            // Every level's path is in a PAX header: 100 MB of tar in all,
            // which zstd compresses fastest.
            "--compression",
            "zstd",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (pid, stop, max) = (child.id(), stop.clone(), max.clone());
        std::thread::spawn(move || sample_descriptors(pid, stop, max))
    };
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(
        output.status.success(),
        "the deep tree did not commit: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let most = max.load(Ordering::Relaxed);
    eprintln!("deep commit: {DEPTH} levels in {elapsed:?}, at most {most} descriptors open");
    assert!(most <= 300, "{most} descriptors open at once");

    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let layer = readable(&registry_blob(result["layer"]["digest"].as_str().unwrap()));
    let found = entries(&layer);
    let deepest = format!("{}z", "d/".repeat(DEPTH - 1));
    assert_eq!(found[&deepest].kind, 'f');
    assert_eq!(found[&deepest].size, (DEPTH - 1).to_string().len() as u64);
    assert_eq!(
        found
            .keys()
            .filter(|k| *k == "z" || k.ends_with("/z"))
            .count(),
        DEPTH
    );
}
