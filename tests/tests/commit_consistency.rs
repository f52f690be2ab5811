//! Every paused commit is the desktop's file system at one instant, on real
//! containerd, runc and a registry, while a writer inside the desktop
//! changes files as fast as it can.
//!
//! The writer (a static C program, run as the container's process) keeps a
//! set of 1 MiB files at versions it bumps in a loop, each in its own way:
//! replaced by rename (`f0`, `f1`), rewritten in place by one `pwrite`
//! (`f2`, `f3`), deleted and re-created in pieces (`f4`), renamed away and
//! replaced (`f5`), stored through a shared memory map (`mm`), and
//! rewritten in place under two hard-linked names (`hl`, `hl2`). Around each
//! change it replaces `/w/manifest` (atomically, by rename) to say the file
//! is `moving` to version v, then `ok` at v.
//!
//! Each commit's image is pulled back and run (containerd applies the
//! layers, the bulk and the delta), and in it every file must be exactly
//! what the image's manifest says: an `ok` file is the complete version,
//! a `moving` one the version before or after (or, for the changes that are
//! not atomic in the desktop either, anything). A file read half old and
//! half new, or an old version kept where the manifest moved on, fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::{Ctr, TestEnv, agent_binary, compile_static_c, container_rootfs, unique};
use sha2::{Digest, Sha256};

const WRITER: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SIZE (1 << 20)
#define FILES 7
static char buf[SIZE];
static const char *names[FILES] = {"f0", "f1", "f2", "f3", "f4", "f5", "mm"};
static long version[FILES + 1];
static int moving[FILES + 1];

/* Version v of a file: its line, repeated, cut at SIZE. */
static void fill(const char *name, long v) {
    char line[64];
    int n = snprintf(line, sizeof line, "%s version %ld\n", name, v);
    for (int i = 0; i < SIZE; i += n) memcpy(buf + i, line, SIZE - i < n ? SIZE - i : n);
}

static void write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n <= 0) _exit(3);
        data += n;
        len -= n;
    }
}

static void manifest(void) {
    char text[1024];
    int n = 0;
    for (int i = 0; i < FILES; i++)
        n += snprintf(text + n, sizeof text - n, "%s %s %ld\n", names[i], moving[i] ? "moving" : "ok", version[i]);
    n += snprintf(text + n, sizeof text - n, "hl %s %ld\n", moving[FILES] ? "moving" : "ok", version[FILES]);
    int fd = open("/w/.manifest.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write_all(fd, text, n);
    close(fd);
    rename("/w/.manifest.tmp", "/w/manifest");
}

static void replace(const char *name) {
    char tmp[64], path[64];
    snprintf(tmp, sizeof tmp, "/w/.%s.tmp", name);
    snprintf(path, sizeof path, "/w/%s", name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write_all(fd, buf, SIZE);
    close(fd);
    rename(tmp, path);
}

static void in_place(const char *path) {
    int fd = open(path, O_WRONLY);
    if (pwrite(fd, buf, SIZE, 0) != SIZE) _exit(4);
    close(fd);
}

int main(void) {
    int mfd = open("/w/mm", O_RDWR | O_CREAT, 0644);
    if (ftruncate(mfd, SIZE) != 0) return 5;
    char *map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (map == MAP_FAILED) return 6;
    for (int i = 0; i < FILES; i++) {
        fill(names[i], 0);
        if (i == 6) memcpy(map, buf, SIZE); else replace(names[i]);
    }
    fill("hl", 0);
    replace("hl");
    link("/w/hl", "/w/hl2");
    manifest();
    close(open("/w/ready", O_WRONLY | O_CREAT, 0644));
    for (long v = 1;; v++) {
        for (int i = 0; i <= FILES; i++) {
            const char *name = i < FILES ? names[i] : "hl";
            moving[i] = 1;
            version[i] = v;
            manifest();
            fill(name, v);
            if (i <= 1) {
                replace(name);
            } else if (i <= 3) {
                char path[64];
                snprintf(path, sizeof path, "/w/%s", name);
                in_place(path);
            } else if (i == 4) {
                unlink("/w/f4");
                int fd = open("/w/f4", O_WRONLY | O_CREAT | O_EXCL, 0644);
                for (int part = 0; part < 4; part++) write_all(fd, buf + part * (SIZE / 4), SIZE / 4);
                close(fd);
            } else if (i == 5) {
                rename("/w/f5", "/w/f5.old");
                replace("f5");
                unlink("/w/f5.old");
            } else if (i == 6) {
                memcpy(map, buf, SIZE);
            } else {
                in_place("/w/hl");
            }
            moving[i] = 0;
            manifest();
        }
    }
}
"#;

const SIZE: usize = 1 << 20;

/// The content of version `v` of a file, as the writer makes it.
fn content(name: &str, v: u64) -> Vec<u8> {
    let line = format!("{name} version {v}\n");
    line.as_bytes().iter().copied().cycle().take(SIZE).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn build_writer(dir: &Path) -> PathBuf {
    compile_static_c(dir, "writer", WRITER)
}

/// How a commit is asked for one layer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OneLayer {
    No,
    /// The operator's knob, for every commit of the agent.
    Environment,
    /// The request's (the API sends it when the layer budget has room
    /// for one layer only).
    Flag,
}

/// A paused commit (the default), asked for one layer or not.
fn commit(
    env: &TestEnv,
    namespace: &str,
    id: &str,
    target: &str,
    one_layer: OneLayer,
) -> serde_json::Value {
    let mut command = Command::new(agent_binary());
    command
        .args(["commit", "--containerd-socket"])
        .arg(&env.containerd_socket)
        .args([
            "--namespace",
            namespace,
            "--container",
            id,
            "--target",
            target,
        ])
        .args(["--insecure-registry", &env.registry, "--state-dir"])
        .arg(&env.state_dir)
        .args(["--compression", "zstd"])
        .env_remove("DCS_CONTAINERD_SOCKET");
    if one_layer == OneLayer::Environment {
        command.env("DCS_ONE_LAYER", "1");
    } else {
        command.env_remove("DCS_ONE_LAYER");
    }
    if one_layer == OneLayer::Flag {
        command.arg("--single-layer");
    }
    let output = command.output().expect("run dcs-agent");
    assert!(
        output.status.success(),
        "dcs-agent commit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("commit prints JSON")
}

/// What a file must be in an image whose manifest says `state` and `v`.
fn check_file(name: &str, state: &str, v: u64, found: Option<&str>) -> Result<(), String> {
    let content_of = if name == "hl2" { "hl" } else { name };
    let is = |version: u64| found == Some(sha256_hex(&content(content_of, version)).as_str());
    let ok = match state {
        "ok" => is(v),
        "moving" => match name {
            // Not atomic in the desktop either: any state is an instant's.
            "f4" | "mm" => true,
            // Renamed away, then replaced: absent for a moment.
            "f5" => found.is_none() || is(v - 1) || is(v),
            _ => is(v - 1) || is(v),
        },
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let what = match found {
        None => "absent".to_string(),
        Some(hash) => (0..=v + 1)
            .rev()
            .find(|&x| sha256_hex(&content(content_of, x)) == hash)
            .map_or_else(|| "a mixture".to_string(), |x| format!("version {x}")),
    };
    Err(format!(
        "{name}: the manifest says {state} {v}, the image has {what}"
    ))
}

/// Pulls the image, runs it and checks every file against its manifest.
fn check_image(ctr: &Ctr, image: &str) -> Result<u64, String> {
    ctr.pull_plain_http(image);
    let out = ctr.run_once(
        image,
        "cd /w && cat manifest && echo --- && for f in f0 f1 f2 f3 f4 f5 mm hl hl2; do \
         if [ -e $f ]; then echo \"$f $(sha256sum < $f | cut -c1-64) $(stat -c %i $f)\"; \
         else echo \"$f absent\"; fi; done",
    );
    let (manifest, files) = out
        .split_once("---\n")
        .ok_or(format!("no manifest: {out}"))?;
    let states: std::collections::HashMap<&str, (&str, u64)> = manifest
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, (words.next()?, words.next()?.parse().ok()?)))
        })
        .collect();
    let mut inodes = std::collections::HashMap::new();
    let mut hashes = std::collections::HashMap::new();
    let mut errors = Vec::new();
    for line in files.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let name = words[0];
        let found = words.get(1).filter(|w| **w != "absent").copied();
        if let Some(inode) = words.get(2) {
            inodes.insert(name, *inode);
        }
        if let Some(hash) = found {
            hashes.insert(name, hash);
        }
        let key = if name == "hl2" { "hl" } else { name };
        let Some((state, v)) = states.get(key) else {
            errors.push(format!("{name} is not in the manifest"));
            continue;
        };
        if let Err(e) = check_file(name, state, *v, found) {
            errors.push(e);
        }
    }
    if inodes.get("hl") != inodes.get("hl2") || hashes.get("hl") != hashes.get("hl2") {
        errors.push("hl and hl2 are no longer one file".to_string());
    }
    if errors.is_empty() {
        Ok(states.values().map(|(_, v)| *v).max().unwrap_or(0))
    } else {
        Err(format!(
            "{image}:\n  {}\nmanifest:\n{manifest}",
            errors.join("\n  ")
        ))
    }
}

#[test]
fn every_paused_commit_is_one_instant_of_a_busy_desktop() {
    let env = TestEnv::get();
    let commits: usize = std::env::var("DCS_CONSISTENCY_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let namespace = unique("consistency");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    let scratch = std::env::temp_dir().join(unique("dcs-writer"));
    std::fs::create_dir_all(&scratch).unwrap();
    let writer = build_writer(&scratch);

    // 48 MiB that do not change, so that the bulk read takes a while; then
    // the writer, once it is in place.
    let script = "mkdir -p /w && dd if=/dev/urandom of=/w/static bs=1M count=48 2>/dev/null && \
                  while [ ! -e /writer ]; do sleep 0.1; done && exec /writer";
    ctr.run_detached("busy", busybox, "overlayfs", &["sh", "-c", script]);
    let root = container_rootfs(&namespace, "busy");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !root.join("w/static").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::copy(&writer, root.join(".writer.partial")).unwrap();
    std::fs::rename(root.join(".writer.partial"), root.join("writer")).unwrap();
    while !root.join("w/ready").exists() {
        assert!(Instant::now() < deadline, "the writer did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut failures = Vec::new();
    let mut deltas = 0;
    let mut last_version = 0;
    for i in 0..=commits {
        // The last two commits ask for one layer always.
        let one_layer = match commits - i {
            0 => OneLayer::Flag,
            1 => OneLayer::Environment,
            _ => OneLayer::No,
        };
        let image = format!("{}/{namespace}/busy:{i}", env.registry);
        let result = commit(&env, &namespace, "busy", &image, one_layer);
        let has_delta = !result["deltaLayer"].is_null();
        deltas += usize::from(has_delta);
        eprintln!(
            "commit {i}: pausedMs {} prepareMs {} delta {} ({:?})",
            result["pausedMs"], result["prepareMs"], has_delta, result["deltaStats"]
        );
        assert!(result["prepareMs"].as_u64().is_some_and(|ms| ms > 0));
        if one_layer != OneLayer::No {
            assert!(!has_delta, "one layer was asked for: {result}");
        }
        match check_image(&ctr, &image) {
            Ok(version) => last_version = last_version.max(version),
            Err(e) => {
                eprintln!("commit {i}: {e}");
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(last_version > 0, "the writer never moved on");
    eprintln!("{commits} commits with a delta layer: {deltas}; writer at version {last_version}");
    // The writer changes files without pause: the delta must have been used.
    assert!(deltas > 0, "no commit caught a change made during its read");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn an_idle_desktop_gets_one_layer() {
    let env = TestEnv::get();
    let namespace = unique("idle");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.run_detached("idle", busybox, "overlayfs", &["sleep", "3600"]);
    ctr.exec(
        "idle",
        "mkdir -p /data && dd if=/dev/urandom of=/data/big bs=1M count=16 2>/dev/null && \
         echo hello > /data/small && ln /data/small /data/link",
    );
    // Older than the commit's "changed just now" margin.
    std::thread::sleep(Duration::from_millis(300));
    let image = format!("{}/{namespace}/idle:1", env.registry);
    let result = commit(&env, &namespace, "idle", &image, OneLayer::No);
    assert!(
        result["deltaLayer"].is_null(),
        "an idle desktop got a second layer: {result}"
    );
    assert!(result["prepareMs"].as_u64().is_some_and(|ms| ms > 0));
    ctr.pull_plain_http(&image);
    let out = ctr.run_once(
        &image,
        "cat /data/small && stat -c %i /data/small /data/link | uniq | wc -l",
    );
    assert_eq!(out, "hello\n1\n");
}
