//! Round trip on real containerd, runc and registry: run a container, change
//! it, commit and push, pull the image by digest into a fresh namespace, run
//! it, and check that every kind of change survived.

use std::collections::BTreeMap;

use e2e_tests::layer::{decompress, entries, sha256_hex};
use e2e_tests::{Ctr, TestEnv, commit, container_rootfs, set_xattr, unique};

/// The tree the first commit creates: the "base" the speaker starts from.
const BASE_TREE: &str = r#"
set -e
mkdir -p /data/gone/sub /data/opaque /data/dir2file
echo original > /data/modify.txt
echo bye > /data/delete.txt
echo x > /data/gone/sub/f
echo old1 > /data/opaque/old1
echo old2 > /data/opaque/old2
echo file > /data/file2dir
echo inner > /data/dir2file/inner
mkdir -p /data/back && echo was-file > /data/back/entry
"#;

/// Every kind of change the layer must carry.
const CHANGES: &str = r#"
set -e
echo added > /data/added.txt
echo modified > /data/modify.txt
rm /data/delete.txt
rm -rf /data/gone
rm -rf /data/opaque && mkdir /data/opaque && echo new > /data/opaque/new
rm /data/file2dir && mkdir /data/file2dir && echo in > /data/file2dir/in
rm -rf /data/dir2file && echo nowfile > /data/dir2file
rm /data/back/entry && mkdir /data/back/entry && rmdir /data/back/entry && echo file-again > /data/back/entry
ln -s ../data/added.txt /data/rel-link
ln -s /data/added.txt /data/abs-link
echo linked > /data/hl1 && ln /data/hl1 /data/hl2
touch /data/suid && chmod 4755 /data/suid
touch /data/sgid && chmod 2711 /data/sgid
mkdir /data/sticky && chmod 1777 /data/sticky
echo mine > /data/owned && chown 1000:1000 /data/owned
mkdir /data/emptydir
mkfifo /data/fifo
echo s > "/data/with space.txt"
echo u > "/data/ünïcødé-名前.txt"
mkdir /data/many
i=0; while [ $i -lt 10000 ]; do echo $i > /data/many/f$i; i=$((i+1)); done
dd if=/dev/urandom of=/data/big bs=1M count=100 2>/dev/null
sha256sum /data/big | cut -d' ' -f1 > /data/big.sha256
echo scratch > /tmp/scratch
mkdir -p /data/cache && echo cached > /data/cache/blob
"#;

/// Prints what the checks compare, from inside a container.
const INSPECT: &str = r#"
cd /data
for f in added.txt modify.txt opaque/new file2dir/in dir2file back/entry hl1 hl2 owned "with space.txt" "ünïcødé-名前.txt"; do
  echo "content $f: $(cat "$f")"
done
for f in delete.txt gone opaque/old1 opaque/old2 file2dir/../file2dir/x cache /tmp/scratch; do
  [ -e "$f" ] && echo "exists $f" || echo "absent $f"
done
echo "rel-link -> $(readlink rel-link) : $(cat rel-link)"
echo "abs-link -> $(readlink abs-link) : $(cat abs-link)"
for f in suid sgid sticky owned emptydir fifo hl1 file2dir dir2file back/entry; do
  echo "stat $f: $(stat -c '%a %u:%g %F' "$f")"
done
echo "inode hl1=hl2: $([ "$(stat -c %i hl1)" = "$(stat -c %i hl2)" ] && echo yes || echo no)"
echo "links hl1: $(stat -c %h hl1)"
echo "many: $(ls many | wc -l) $(cat many/f9999)"
echo "big: $(sha256sum big | cut -d' ' -f1) expected $(cat big.sha256)"
echo "emptydir entries: $(ls -A emptydir | wc -l)"
"#;

#[test]
fn committed_image_runs_elsewhere_with_every_kind_of_change() {
    let env = TestEnv::get();
    let namespace = unique("roundtrip");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");

    // 1. The base tree, committed: the speaker's starting image.
    ctr.run_detached("base", busybox, "overlayfs", &["sleep", "3600"]);
    ctr.exec("base", BASE_TREE);
    let base_ref = format!("{}/{namespace}/base:1", env.registry);
    let base = commit(
        &env,
        &env.containerd_socket,
        &namespace,
        "base",
        &base_ref,
        &[],
    );
    assert_eq!(base["method"], "overlay");

    // 2. A container from it, changed in every way, committed with config
    //    changes, an extra exclusion and zstd.
    ctr.run_detached("desk", &base_ref, "overlayfs", &["sleep", "3600"]);
    ctr.exec("desk", CHANGES);
    let target = format!("{}/{namespace}/desktop:v2", env.registry);
    let result = commit(
        &env,
        &env.containerd_socket,
        &namespace,
        "desk",
        &target,
        &[
            "--compression",
            "zstd",
            "--exclude",
            "/data/cache",
            "--change",
            r#"CMD ["cat", "/data/added.txt"]"#,
            "--change",
            "ENV GREETING=hello",
            "--change",
            "WORKDIR /data",
            "--change",
            "LABEL org.example.team=platform",
            "--change",
            "EXPOSE 5901",
            "--message",
            "workshop tools",
        ],
    );
    let digest = result["manifestDigest"].as_str().unwrap().to_string();
    assert_eq!(result["method"], "overlay");
    assert_eq!(result["image"], target);
    assert!(result["pausedMs"].as_u64().is_some());
    assert_eq!(
        result["layer"]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );

    // 3. Pull by digest into a fresh namespace and run there.
    let fresh = Ctr::new(&env.containerd_socket, &unique("fresh"));
    let by_digest = format!("{}/{namespace}/desktop@{digest}", env.registry);
    fresh.pull_plain_http(&by_digest);
    assert_eq!(
        fresh.run_default(&by_digest).trim(),
        "added",
        "new CMD runs"
    );
    let report = fresh.run_once(&by_digest, INSPECT);
    let expected = [
        "content added.txt: added",
        "content modify.txt: modified",
        "content opaque/new: new",
        "content file2dir/in: in",
        "content dir2file: nowfile",
        "content back/entry: file-again",
        "content hl1: linked",
        "content hl2: linked",
        "content owned: mine",
        "content with space.txt: s",
        "content ünïcødé-名前.txt: u",
        "absent delete.txt",
        "absent gone",
        "absent opaque/old1",
        "absent opaque/old2",
        "absent cache",
        "absent /tmp/scratch",
        "rel-link -> ../data/added.txt : added",
        "abs-link -> /data/added.txt : added",
        "stat suid: 4755 0:0 regular",
        "stat sgid: 2711 0:0 regular",
        "stat sticky: 1777 0:0 directory",
        "stat owned: 644 1000:1000 regular",
        "stat emptydir: 755 0:0 directory",
        "stat fifo: 644 0:0 fifo",
        "stat file2dir: 755 0:0 directory",
        "inode hl1=hl2: yes",
        "links hl1: 2",
        "many: 10000 9999",
        "emptydir entries: 0",
    ];
    for line in expected {
        assert!(
            report.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{report}"
        );
    }
    let big = report
        .lines()
        .find(|l| l.starts_with("big: "))
        .expect("big line");
    let parts: Vec<&str> = big.split_whitespace().collect();
    assert_eq!(parts[1], parts[3], "100 MB file intact: {big}");

    // 4. The documents are valid: diff_ids are the uncompressed digests,
    //    history matches the layers, lineage annotations are there.
    let manifest: serde_json::Value =
        serde_json::from_str(&fresh.run(&["content", "get", &digest])).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(config_digest, result["configDigest"]);
    let config: serde_json::Value =
        serde_json::from_str(&fresh.run(&["content", "get", config_digest])).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    // busybox's layer, then each commit's bulk layer and, when files
    // changed while it was read (or just before), its delta layer: how
    // close the test's writes come to the commit decides that, not the test.
    let layers_of = |commit: &serde_json::Value| 1 + usize::from(!commit["deltaLayer"].is_null());
    assert_eq!(layers.len(), 1 + layers_of(&base) + layers_of(&result));
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let blob = fresh.content_get(layer["digest"].as_str().unwrap());
        assert_eq!(sha256_hex(&blob), layer["digest"].as_str().unwrap());
        assert_eq!(blob.len() as u64, layer["size"].as_u64().unwrap());
        assert_eq!(sha256_hex(&decompress(&blob)), diff_id.as_str().unwrap());
    }
    let history = config["history"].as_array().unwrap();
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"].as_bool() != Some(true))
        .count();
    assert_eq!(non_empty, layers.len());
    // This commit's entries are the last ones (bulk, then delta when there
    // is one); the message is on its bulk entry.
    let own = &history[history.len() - layers_of(&result)..];
    let last = own
        .iter()
        .find(|h| h["comment"] == "workshop tools")
        .unwrap_or_else(|| panic!("no entry of this commit has the message: {own:?}"));
    let created_by = last["created_by"].as_str().unwrap();
    assert!(!created_by.contains("hello"), "no env values: {created_by}");
    assert!(
        !created_by.contains("added.txt"),
        "no arguments: {created_by}"
    );
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["org.opencontainers.image.base.name"], base_ref);
    assert_eq!(
        annotations["org.opencontainers.image.base.digest"],
        base["manifestDigest"]
    );
    assert!(annotations["org.opencontainers.image.created"].is_string());
    let cfg = &config["config"];
    assert!(
        cfg["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("GREETING=hello"))
    );
    assert_eq!(cfg["WorkingDir"], "/data");
    assert_eq!(cfg["Labels"]["org.example.team"], "platform");
    assert!(cfg["ExposedPorts"]["5901/tcp"].is_object());

    // 5. The new layer itself: one opaque marker for the recreated
    //    directory, whiteouts for deletions, xattr-free (set none here),
    //    excluded paths absent, hardlink stored as a link.
    let layer_blob = fresh.content_get(result["layer"]["digest"].as_str().unwrap());
    let layer = entries(&decompress(&layer_blob));
    let has = |p: &str| layer.contains_key(p);
    assert!(has("data/opaque/.wh..wh..opq"));
    assert!(has("data/.wh.delete.txt"));
    assert!(has("data/.wh.gone"));
    assert!(!has("tmp/scratch") && !has("data/cache") && !has("data/cache/blob"));
    let links: BTreeMap<_, _> = layer
        .values()
        .filter(|e| e.kind == 'h')
        .map(|e| (e.path.clone(), e.link.clone()))
        .collect();
    assert_eq!(links.get("data/hl2").map(String::as_str), Some("data/hl1"));
    assert_eq!(layer["data/fifo"].kind, 'p');
}

#[test]
fn gzip_layer_with_device_node_and_xattrs_round_trips() {
    let env = TestEnv::get();
    let namespace = unique("gzip");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.run_detached("dev", busybox, "overlayfs", &["sleep", "3600"]);
    ctr.exec(
        "dev",
        "mknod /root/null c 1 3 && echo note > /root/noted && mkdir -p /root/d",
    );
    // busybox has no setfattr: set extended attributes from the host,
    // through the container's root file system.
    let rootfs = container_rootfs(&namespace, "dev").join("root");
    set_xattr(&rootfs.join("noted"), "user.dcs.note", b"speaker-1");
    set_xattr(&rootfs.join("d"), "user.dcs.dir", b"yes");

    let target = format!("{}/{namespace}/dev:1", env.registry);
    // Without a pause the layer streams to the registry as it is built.
    let result = commit(
        &env,
        &env.containerd_socket,
        &namespace,
        "dev",
        &target,
        &["--no-pause"],
    );
    assert_eq!(
        result["layer"]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(result["pausedMs"], 0);
    assert_eq!(result["push"]["layerStreamed"], true, "{result}");
    let fresh = Ctr::new(&env.containerd_socket, &unique("fresh"));
    let by_digest = format!(
        "{}/{namespace}/dev@{}",
        env.registry,
        result["manifestDigest"].as_str().unwrap()
    );
    fresh.pull_plain_http(&by_digest);
    let out = fresh.run_once(&by_digest, "stat -c '%F %t:%T' /root/null; cat /root/noted");
    assert!(out.contains("character special file 1:3"), "{out}");
    assert!(out.contains("note"), "{out}");

    let blob = fresh.content_get(result["layer"]["digest"].as_str().unwrap());
    let layer = entries(&decompress(&blob));
    assert_eq!(layer["root/null"].kind, 'c');
    assert_eq!(layer["root/null"].device, (1, 3));
    assert_eq!(
        layer["root/noted"]
            .xattrs
            .get("user.dcs.note")
            .map(Vec::as_slice),
        Some(&b"speaker-1"[..])
    );
    assert_eq!(
        layer["root/d"]
            .xattrs
            .get("user.dcs.dir")
            .map(Vec::as_slice),
        Some(&b"yes"[..])
    );
    // No overlay bookkeeping leaks into the image.
    assert!(
        layer
            .values()
            .all(|e| e.xattrs.keys().all(|k| !k.starts_with("trusted.overlay")))
    );
}
