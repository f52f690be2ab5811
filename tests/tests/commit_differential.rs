//! Differential check of `dcs-agent commit` against containerd's own Diff
//! service, on real containerd and runc.
//!
//! The same container is turned into a layer twice: by the agent (overlay
//! upper directory walk) and by containerd's Diff service. Both layers must
//! say the same thing, apart from three documented differences:
//! 1. excluded paths are absent from ours and present in containerd's;
//! 2. containerd 1.6 keeps only the `security.capability` xattr, we keep
//!    `user.*` too;
//! 3. a directory deleted and recreated is one `.wh..wh..opq` in ours and
//!    one `.wh.<name>` per removed entry in containerd's.
//!
//! Both layers are compared entry by entry (without whiteouts), and by
//! their effect: each is applied, with a small in-memory model of OCI layer
//! application (`e2e_tests::layer::apply`), onto the base image's files, and the resulting trees must be
//! equal.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e_tests::layer::apply::{apply_all, comparable_entry, is_whiteout, link_path};
use e2e_tests::layer::{self, LayerEntry, sha256_hex};
use e2e_tests::{Ctr, TestEnv, commit, container_rootfs, set_xattr, unique};
use node_agent::containerd::Containerd;
use serde_json::{Value, json};

const UNCOMPRESSED_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// With `data/new/` in front, longer than ustar's 100-byte name field: the
/// writers need the prefix field for it.
const LONG_NAME: &str = "a-rather-long-file-name-that-does-not-fit-in-the-one-hundred-bytes-of-a-ustar-name-field-at-all.txt";

/// Over ustar's 256 bytes of prefix and name: only a PAX `path` holds it.
fn deep_dir() -> String {
    let part = "d".repeat(60);
    format!("new/deep/{part}/{part}/{part}/{part}")
}

/// The changes made inside the container (busybox sh).
fn change_script() -> String {
    let deep = deep_dir();
    format!(
        r#"set -e
cd /data
echo changed >> modify.txt
chmod 0600 chmod-only.txt
chown 1000:1000 chown-only.txt
rm delete-me.txt
rm -rf deldir
rm -rf recreate
mkdir recreate
echo new > recreate/same-name.txt
echo fresh > recreate/fresh.txt
mkdir recreate/sub
echo y > recreate/sub/y.txt
rm file2dir
mkdir file2dir
echo inside > file2dir/inside.txt
rm -rf dir2file
echo now-a-file > dir2file
rm cache/old.bin
echo new-cache > cache/new.bin
echo more >> lower.log
chmod 0750 keep
mv rename-me.txt renamed.txt
mv movedir moved
chmod 4755 /opt/app/tool
echo 'root2:x:0:0::/root:/bin/sh' >> /etc/passwd
mkdir -p new/empty-dir new/sub
echo hello > new/file.txt
: > new/empty-file
dd if=/dev/urandom of=new/random.bin bs=65536 count=16 2>/dev/null
printf x > new/setuid
chmod 4755 new/setuid
printf y > new/setgid
chmod 2711 new/setgid
mkdir new/setgid-dir
chmod 2775 new/setgid-dir
mkdir new/sticky
chmod 1777 new/sticky
printf '#!/bin/sh\n' > new/cap-tool
chmod 0755 new/cap-tool
echo secret > new/no-permissions
chmod 0000 new/no-permissions
echo big > new/big-ids
chown 3000000:3000001 new/big-ids
echo mine > new/owned
chown 1000:1000 new/owned
mkdir new/owned-dir
chown 1000:1000 new/owned-dir
ln -s ../modify.txt new/rel-link
ln -s /etc/passwd new/abs-link
ln -s /nowhere/at/all new/dangling
echo linked > new/h1
ln new/h1 new/h2
ln new/h1 new/sub/h3
mkfifo new/fifo
mknod new/null c 1 3
mkdir 'new/with space'
echo spaced > 'new/with space/ünï cödé ✓.txt'
echo long > 'new/{LONG_NAME}'
mkdir -p {deep}
echo deep > {deep}/file.txt
echo debug > new/debug.log
echo scratch > /tmp/scratch.txt
mkdir /tmp/dir
echo t > /tmp/dir/f
echo v > /var/tmp/v.txt
echo profile > /home/speaker/.profile
chown 1000:1000 /home/speaker/.profile
"#
    )
}

/// Excludes given to the agent, on top of its defaults (`/tmp/*`,
/// `/var/tmp/*`, ...).
const EXCLUDES: &[&str] = &["--exclude", "/data/cache", "--exclude", "*.log"];

/// The same rules, for the paths this test creates.
fn is_excluded(path: &str) -> bool {
    path.starts_with("tmp/")
        || path.starts_with("var/tmp/")
        || path == "data/cache"
        || path.starts_with("data/cache/")
        || path.ends_with(".log")
}

// ---------------------------------------------------------------------------
// The base image: busybox plus a fixture layer with something to change.
// ---------------------------------------------------------------------------

/// One entry of the fixture layer.
enum Fixture {
    Dir(&'static str, u32),
    File(&'static str, u32, &'static str),
}

const FIXTURE: &[Fixture] = &[
    Fixture::Dir("data", 0o755),
    Fixture::Dir("data/keep", 0o755),
    Fixture::File("data/keep/unchanged.txt", 0o644, "same\n"),
    Fixture::File("data/modify.txt", 0o644, "original\n"),
    Fixture::File("data/chmod-only.txt", 0o644, "mode\n"),
    Fixture::File("data/chown-only.txt", 0o644, "owner\n"),
    Fixture::File("data/delete-me.txt", 0o644, "bye\n"),
    Fixture::Dir("data/deldir", 0o755),
    Fixture::File("data/deldir/a.txt", 0o644, "a\n"),
    Fixture::Dir("data/deldir/sub", 0o700),
    Fixture::File("data/deldir/sub/b.txt", 0o600, "b\n"),
    Fixture::Dir("data/recreate", 0o755),
    Fixture::File("data/recreate/old1", 0o644, "old1\n"),
    Fixture::File("data/recreate/old2", 0o644, "old2\n"),
    Fixture::File("data/recreate/same-name.txt", 0o644, "old\n"),
    Fixture::Dir("data/recreate/sub", 0o755),
    Fixture::File("data/recreate/sub/x.txt", 0o644, "x\n"),
    Fixture::File("data/file2dir", 0o644, "a file\n"),
    Fixture::Dir("data/dir2file", 0o755),
    Fixture::File("data/dir2file/inner.txt", 0o644, "inner\n"),
    Fixture::Dir("data/cache", 0o755),
    Fixture::File("data/cache/old.bin", 0o644, "old cache\n"),
    Fixture::File("data/lower.log", 0o644, "log\n"),
    Fixture::File("data/rename-me.txt", 0o644, "renamed\n"),
    Fixture::Dir("data/movedir", 0o755),
    Fixture::File("data/movedir/m.txt", 0o644, "moved\n"),
    Fixture::Dir("opt", 0o755),
    Fixture::Dir("opt/app", 0o755),
    Fixture::File("opt/app/tool", 0o755, "#!/bin/sh\necho tool\n"),
];

fn fixture_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in FIXTURE {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(946_684_800);
        match entry {
            Fixture::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .expect("fixture directory");
            }
            Fixture::File(path, mode, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, data.as_bytes())
                    .expect("fixture file");
            }
        }
    }
    builder.into_inner().expect("fixture layer")
}

/// The base image as an OCI archive, and its layers uncompressed, in order.
struct BaseImage {
    archive: PathBuf,
    name: String,
    layers: Vec<Vec<u8>>,
}

/// Busybox (from `scripts/make-test-image.sh`) plus the fixture layer,
/// written as an OCI archive that `ctr images import` names `name`.
fn base_image(dir: &Path, name: &str) -> BaseImage {
    let busybox = std::fs::read(e2e_tests::busybox_archive()).expect("read busybox archive");
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(&busybox[..]);
    for item in archive.entries().expect("busybox archive") {
        let mut item = item.expect("busybox archive entry");
        if item.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&item.path_bytes()).to_string();
        let mut data = Vec::new();
        item.read_to_end(&mut data).expect("busybox archive data");
        files.insert(path.trim_start_matches("./").to_string(), data);
    }
    let blob = |digest: &str| -> Vec<u8> {
        let key = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        files
            .get(&key)
            .unwrap_or_else(|| panic!("busybox archive lacks {key}"))
            .clone()
    };
    let index: Value = serde_json::from_slice(&files["index.json"]).expect("index.json");
    let entry = &index["manifests"][0];
    let mut manifest: Value =
        serde_json::from_slice(&blob(entry["digest"].as_str().expect("manifest digest")))
            .expect("busybox manifest");
    let mut config: Value = serde_json::from_slice(&blob(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ))
    .expect("busybox config");
    let busybox_layers: Vec<Vec<u8>> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| layer::decompress(&blob(l["digest"].as_str().expect("layer digest"))))
        .collect();

    let fixture = fixture_layer();
    let fixture_digest = sha256_hex(&fixture);
    manifest["layers"]
        .as_array_mut()
        .expect("layers")
        .push(json!({
            "mediaType": UNCOMPRESSED_LAYER,
            "digest": fixture_digest,
            "size": fixture.len(),
        }));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("diff_ids")
        .push(json!(fixture_digest));
    if let Some(history) = config["history"].as_array_mut() {
        history.push(json!({"created_by": "e2e differential fixture"}));
    }
    let config_bytes = serde_json::to_vec(&config).expect("config json");
    manifest["config"]["digest"] = json!(sha256_hex(&config_bytes));
    manifest["config"]["size"] = json!(config_bytes.len());
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest json");
    let new_index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256_hex(&manifest_bytes),
            "size": manifest_bytes.len(),
            "platform": entry["platform"],
            "annotations": {"io.containerd.image.name": name},
        }],
    });

    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut header, path, data)
            .expect("write base archive");
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add(
        "index.json".into(),
        &serde_json::to_vec(&new_index).expect("index json"),
    );
    for (path, data) in files.iter().filter(|(p, _)| p.starts_with("blobs/")) {
        add(path.clone(), data);
    }
    for data in [&fixture, &config_bytes, &manifest_bytes] {
        add(
            format!(
                "blobs/sha256/{}",
                sha256_hex(data).trim_start_matches("sha256:")
            ),
            data,
        );
    }
    let archive = dir.join("base.tar");
    std::fs::write(&archive, out.into_inner().expect("base archive")).expect("write base.tar");
    let mut layers = busybox_layers;
    layers.push(fixture);
    BaseImage {
        archive,
        name: name.to_string(),
        layers,
    }
}

/// Asserts that two maps are equal, listing every difference.
fn assert_same<V: PartialEq + std::fmt::Debug>(
    what: &str,
    ours: &BTreeMap<String, V>,
    theirs: &BTreeMap<String, V>,
) {
    let mut problems = Vec::new();
    for (path, value) in ours {
        match theirs.get(path) {
            None => problems.push(format!("only in ours: {path}: {value:?}")),
            Some(other) if other != value => problems.push(format!(
                "differs: {path}:\n      ours:        {value:?}\n      containerd:  {other:?}"
            )),
            Some(_) => {}
        }
    }
    for (path, value) in theirs {
        if !ours.contains_key(path) {
            problems.push(format!("only in containerd's: {path}: {value:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: our layer and containerd's differ:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Helpers around containerd and the registry.
// ---------------------------------------------------------------------------

/// The running container's root filesystem as the host sees it.
fn rootfs(namespace: &str, id: &str) -> PathBuf {
    let path = container_rootfs(namespace, id);
    assert!(
        path.join("data").is_dir(),
        "{} is not the container's mounted root filesystem",
        path.display()
    );
    path
}

/// A `security.capability` value (VFS_CAP_REVISION_2, effective) granting
/// CAP_NET_BIND_SERVICE.
fn capability_value() -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    value.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted, low
    value.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low
    value.extend_from_slice(&0u32.to_le_bytes()); // permitted, high
    value.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high
    value
}

/// Pulls the pushed image by its manifest digest into a fresh namespace and
/// returns that namespace and the layer blob as the registry serves it.
fn pull_layer(env: &TestEnv, repository: &str, result: &Value) -> (Ctr, Vec<u8>) {
    let manifest = result["manifestDigest"]
        .as_str()
        .expect("manifestDigest in the commit result");
    let digest = result["layer"]["digest"]
        .as_str()
        .expect("layer.digest in the commit result");
    let fresh = Ctr::new(&env.containerd_socket, &unique("diff-pull"));
    fresh.pull_plain_http(&format!("{}/{repository}@{manifest}", env.registry));
    let blob = fresh.content_get(digest);
    (fresh, blob)
}

/// Checks the digests and sizes the agent reported against the blob.
fn check_digests(result: &Value, blob: &[u8], media_type: &str) -> Vec<u8> {
    let tar_bytes = layer::decompress(blob);
    let report = &result["layer"];
    assert_eq!(
        report["digest"].as_str(),
        Some(sha256_hex(blob).as_str()),
        "the layer digest must be the sha256 of the blob"
    );
    assert_eq!(
        report["diffId"].as_str(),
        Some(sha256_hex(&tar_bytes).as_str()),
        "the diff_id must be the sha256 of the uncompressed tar"
    );
    assert_eq!(report["size"].as_u64(), Some(blob.len() as u64));
    assert_eq!(
        report["uncompressedSize"].as_u64(),
        Some(tar_bytes.len() as u64)
    );
    assert_eq!(report["mediaType"].as_str(), Some(media_type));
    assert!(
        tar_bytes.len() > blob.len() / 2 && tar_bytes != blob,
        "the blob must be compressed"
    );
    tar_bytes
}

/// containerd's own diff of the container: the image's top snapshot
/// against the container's snapshot, uncompressed.
fn containerd_diff(socket: &Path, namespace: &str, container: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let client = Containerd::connect(socket, namespace)
            .await
            .expect("connect to containerd");
        let info = client.container(container).await.expect("container");
        let lease = client
            .create_lease(&unique("e2e-diff"), Duration::from_secs(600), None)
            .await
            .expect("lease");
        let parent = client
            .snapshot_parent(&info.snapshotter, &info.snapshot_key)
            .await
            .expect("snapshot parent");
        let view = unique("e2e-view");
        let lower = client
            .view_snapshot(&info.snapshotter, &view, &parent, &lease)
            .await
            .expect("view of the image's top snapshot");
        let upper = client
            .snapshot_mounts(&info.snapshotter, &info.snapshot_key)
            .await
            .expect("container mounts");
        let descriptor = client
            .diff(lower, upper, UNCOMPRESSED_LAYER, &lease)
            .await
            .expect("containerd Diff");
        let blob = client
            .read_blob("diff", &descriptor.digest)
            .await
            .expect("read containerd's diff");
        client
            .remove_snapshot(&info.snapshotter, &view)
            .await
            .expect("remove view");
        client.delete_lease(&lease).await.expect("delete lease");
        assert_eq!(descriptor.media_type, UNCOMPRESSED_LAYER);
        assert_eq!(sha256_hex(&blob), descriptor.digest);
        blob
    })
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

#[test]
fn overlay_commit_matches_containerd_diff() {
    let env = TestEnv::get();
    let namespace = unique("diff-overlay");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let work = tempfile_dir(&namespace);
    let base = base_image(&work, &format!("localhost/dcs-test/{namespace}:base"));
    ctr.run(&[
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        base.archive.to_str().expect("utf-8 path"),
    ]);
    let id = unique("c");
    ctr.run_detached(&id, &base.name, "overlayfs", &["sleep", "1000"]);
    ctr.exec(&id, &change_script());

    // Extended attributes from the host, through the container's mount.
    let root = rootfs(&namespace, &id);
    for path in ["data/new/file.txt", "data/new/sub", "data/modify.txt"] {
        set_xattr(&root.join(path), "user.dcs.note", b"set from the host");
    }
    set_xattr(
        &root.join("data/new/random.bin"),
        "user.dcs.other",
        b"\x00\x01binary",
    );
    set_xattr(
        &root.join("data/new/cap-tool"),
        "security.capability",
        &capability_value(),
    );

    // containerd's view of the change.
    let theirs_tar = containerd_diff(&env.containerd_socket, &namespace, &id);
    let theirs = layer::entries(&theirs_tar);

    // Ours, twice: gzip and zstd.
    let repository = format!("e2e/{namespace}");
    let mut ours_layers = Vec::new();
    for (compression, media_type) in [
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let target = format!("{}/{repository}:{compression}", env.registry);
        let mut extra = vec!["--no-pause", "--compression", compression];
        // gzip: the node keeps the image too; zstd: the registry only.
        let local_image = compression == "gzip";
        if local_image {
            extra.push("--local-image");
        }
        extra.extend_from_slice(EXCLUDES);
        let result = commit(
            &env,
            &env.containerd_socket,
            &namespace,
            &id,
            &target,
            &extra,
        );
        assert_eq!(result["method"], "overlay", "{result:#}");
        let layer_digest = result["layer"]["digest"].as_str().expect("digest");
        let kept = ctr
            .run(&["content", "ls", "-q"])
            .lines()
            .any(|line| line.trim() == layer_digest);
        let named = !ctr
            .run(&["images", "ls", "-q", &format!("name=={target}")])
            .trim()
            .is_empty();
        assert_eq!(
            (kept, named),
            (local_image, local_image),
            "containerd keeps the layer and names the image exactly with --local-image"
        );
        let (fresh, blob) = pull_layer(&env, &repository, &result);
        if local_image {
            let local = ctr.content_get(layer_digest);
            assert!(
                local == blob,
                "the registry's layer blob differs from the one in the source namespace"
            );
        }
        let tar_bytes = check_digests(&result, &blob, media_type);
        if compression == "zstd" {
            // The pulled image runs and has the change.
            let manifest = result["manifestDigest"].as_str().expect("digest");
            let out = fresh.run_once(
                &format!("{}/{repository}@{manifest}", env.registry),
                "cat /data/modify.txt /data/new/h2 /data/dir2file; ls /data/recreate; \
                 test ! -e /data/deldir && echo deldir-gone",
            );
            assert_eq!(
                out,
                "original\nchanged\nlinked\nnow-a-file\nfresh.txt\nsame-name.txt\nsub\ndeldir-gone\n"
            );
        }
        ours_layers.push((compression, tar_bytes));
    }
    let gzip_entries = layer::entries(&ours_layers[0].1);
    let zstd_entries = layer::entries(&ours_layers[1].1);
    assert_eq!(
        gzip_entries, zstd_entries,
        "gzip and zstd commits of one container must hold the same entries"
    );
    let ours = gzip_entries;

    // The test is only worth something if the change is all there.
    let expect = |path: &str, kind: char, mode: u32| {
        let entry = ours
            .get(path)
            .unwrap_or_else(|| panic!("our layer lacks {path}"));
        assert_eq!(
            (entry.kind, entry.mode),
            (kind, mode),
            "{path} in our layer: {entry:?}"
        );
        entry.clone()
    };
    expect("data/new/setuid", 'f', 0o4755);
    expect("data/new/setgid", 'f', 0o2711);
    expect("data/new/setgid-dir", 'd', 0o2775);
    expect("data/new/sticky", 'd', 0o1777);
    expect("opt/app/tool", 'f', 0o4755);
    expect("data/chmod-only.txt", 'f', 0o600);
    expect("data/new/empty-dir", 'd', 0o755);
    expect("data/new/no-permissions", 'f', 0);
    expect("data/keep", 'd', 0o750);
    expect("data/renamed.txt", 'f', 0o644);
    expect("data/moved/m.txt", 'f', 0o644);
    expect("data/new/fifo", 'p', 0o644);
    let owned = expect("data/new/owned", 'f', 0o644);
    assert_eq!((owned.uid, owned.gid), (1000, 1000));
    let owned = expect("data/chown-only.txt", 'f', 0o644);
    assert_eq!((owned.uid, owned.gid), (1000, 1000));
    let null = ours.get("data/new/null").expect("device node");
    assert_eq!((null.kind, null.device), ('c', (1, 3)));
    assert_eq!(ours["data/new/rel-link"].link, "../modify.txt");
    assert_eq!(ours["data/new/abs-link"].link, "/etc/passwd");
    assert_eq!(ours["data/new/dangling"].kind, 'l');
    assert_eq!(ours["data/new/h1"].kind, 'f');
    assert_eq!(
        (
            ours["data/new/h2"].kind,
            link_path(&ours["data/new/h2"].link)
        ),
        ('h', "data/new/h1".to_string())
    );
    assert_eq!(ours["data/new/sub/h3"].kind, 'h');
    assert!(ours.contains_key("data/new/with space/ünï cödé ✓.txt"));
    assert!(ours.contains_key(&format!("data/new/{LONG_NAME}")));
    assert!(ours.contains_key(&format!("data/{}/file.txt", deep_dir())));
    assert_eq!(ours["data/new/random.bin"].size, 1024 * 1024);
    for path in [
        "data/.wh.delete-me.txt",
        "data/.wh.deldir",
        "data/.wh.rename-me.txt",
        "data/.wh.movedir",
        "data/recreate/.wh..wh..opq",
        "data/dir2file",
    ] {
        assert!(ours.contains_key(path), "our layer lacks {path}");
    }
    for path in [
        "data/deldir/a.txt",
        "data/recreate/.wh.old1",
        "data/keep/unchanged.txt",
    ] {
        assert!(!ours.contains_key(path), "our layer has {path}");
    }

    // IDs too big for ustar's octal fields travel in PAX records.
    for (name, tar_bytes) in [("ours", &ours_layers[0].1), ("containerd's", &theirs_tar)] {
        let records = pax_records(tar_bytes, "data/new/big-ids");
        assert_eq!(
            (
                records.get("uid").map(String::as_str),
                records.get("gid").map(String::as_str)
            ),
            (Some("3000000"), Some("3000001")),
            "{name} layer: PAX records of data/new/big-ids: {records:?}"
        );
    }

    // (i) Excluded paths: none in ours, all in containerd's.
    for path in [
        "tmp/scratch.txt",
        "tmp/dir/f",
        "var/tmp/v.txt",
        "data/cache/new.bin",
        "data/cache/.wh.old.bin",
        "data/lower.log",
        "data/new/debug.log",
    ] {
        assert!(!ours.contains_key(path), "excluded {path} is in our layer");
        assert!(
            theirs.contains_key(path),
            "containerd's diff lacks {path}: the test's change did not happen"
        );
    }
    for path in ours.keys() {
        assert!(!is_excluded(path), "excluded {path} is in our layer");
    }
    assert!(
        ours.contains_key("tmp"),
        "/tmp itself must stay in the layer"
    );

    // (ii) xattrs: containerd keeps only security.capability.
    for path in ["data/new/file.txt", "data/new/sub", "data/modify.txt"] {
        assert_eq!(
            ours[path].xattrs.get("user.dcs.note").map(Vec::as_slice),
            Some(&b"set from the host"[..]),
            "{path} lost its user xattr in our layer"
        );
        assert!(
            !theirs[path].xattrs.contains_key("user.dcs.note"),
            "containerd 1.6 was expected to drop user xattrs ({path})"
        );
    }
    assert_eq!(
        ours["data/new/random.bin"]
            .xattrs
            .get("user.dcs.other")
            .map(Vec::as_slice),
        Some(&b"\x00\x01binary"[..])
    );
    for (name, entries) in [("ours", &ours), ("containerd's", &theirs)] {
        assert_eq!(
            entries["data/new/cap-tool"]
                .xattrs
                .get("security.capability"),
            Some(&capability_value()),
            "{name} layer lacks the file capability"
        );
        for (path, entry) in entries.iter() {
            assert!(
                !entry.xattrs.keys().any(|k| k.starts_with("trusted.")),
                "{name} layer leaks trusted.* xattrs on {path}: {:?}",
                entry.xattrs.keys()
            );
        }
    }

    // (iii) Whiteout form of the deleted-and-recreated directory.
    for path in [
        "data/recreate/.wh.old1",
        "data/recreate/.wh.old2",
        "data/recreate/sub/.wh.x.txt",
    ] {
        assert!(
            theirs.contains_key(path),
            "containerd's diff was expected to list {path}"
        );
    }
    assert!(!theirs.contains_key("data/recreate/.wh..wh..opq"));

    // Entry by entry, without whiteouts and excluded paths.
    let direct = |entries: &BTreeMap<String, LayerEntry>| -> BTreeMap<String, LayerEntry> {
        entries
            .iter()
            .filter(|(p, _)| !is_whiteout(p) && !is_excluded(p))
            .map(|(p, e)| (p.clone(), comparable_entry(e)))
            .collect()
    };
    assert_same("entries", &direct(&ours), &direct(&theirs));

    // By effect: both applied onto the base image give the same tree.
    let base_layers: Vec<_> = base.layers.iter().map(|l| layer::entries(l)).collect();
    let our_tree = apply_all(&base_layers, &ours).comparable(is_excluded);
    let their_tree = apply_all(&base_layers, &theirs).comparable(is_excluded);
    assert_same("trees", &our_tree, &their_tree);
    // The model itself is not vacuous.
    assert!(!our_tree.contains_key("data/recreate/old1"));
    assert!(!our_tree.contains_key("data/deldir"));
    assert!(our_tree.contains_key("data/keep/unchanged.txt"));
    assert_eq!(our_tree["data/dir2file"].0.kind, 'f');
    assert_eq!(our_tree["data/file2dir"].0.kind, 'd');
    assert_eq!(our_tree["data/new/sub/h3"].1, "data/new/h1");

    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn native_snapshotter_commit_uses_the_diff_service_and_round_trips() {
    let env = TestEnv::get();
    let namespace = unique("diff-native");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let image = ctr.import_busybox("native");
    let id = unique("c");
    ctr.run_detached(&id, image, "native", &["sleep", "1000"]);
    ctr.exec(
        &id,
        r#"set -e
mkdir -p /data/cache /data/sub
echo keep > /data/keep.txt
echo 'root2:x:0:0::/root:/bin/sh' >> /etc/passwd
rm /etc/hostname
echo secret > /data/cache/token
echo log > /data/a.log
ln /data/a.log /data/b-keep
echo linked > /data/c
ln /data/c /data/sub/d
echo scratch > /tmp/scratch.txt
ln -s keep.txt /data/link
chmod 4755 /data/keep.txt
"#,
    );

    let repository = format!("e2e/{namespace}");
    let target = format!("{}/{repository}:native", env.registry);
    // The node keeps the image: its layer is read from this namespace below.
    let mut extra = vec!["--no-pause", "--local-image"];
    extra.extend_from_slice(EXCLUDES);
    let result = commit(
        &env,
        &env.containerd_socket,
        &namespace,
        &id,
        &target,
        &extra,
    );
    assert_eq!(
        result["method"], "diff-service",
        "the native snapshotter has no overlay upper directory: {result:#}"
    );

    // The layer as committed (read from the source namespace, so that an
    // unpullable layer is still examined).
    let digest = result["layer"]["digest"].as_str().expect("layer digest");
    let blob = ctr.content_get(digest);
    let tar_bytes = check_digests(
        &result,
        &blob,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let ours = layer::entries(&tar_bytes);
    for path in ours.keys() {
        assert!(!is_excluded(path), "excluded {path} is in the layer");
    }
    for path in [
        "data/keep.txt",
        "data/b-keep",
        "data/c",
        "data/sub/d",
        "data/link",
        "etc/passwd",
        "etc/.wh.hostname",
    ] {
        assert!(
            ours.contains_key(path),
            "the layer lacks {path}: {:?}",
            ours.keys()
        );
    }
    assert_eq!(ours["data/keep.txt"].mode, 0o4755);
    for (path, entry) in &ours {
        if entry.kind == 'h' {
            let target = link_path(&entry.link);
            assert!(
                ours.get(&target).is_some_and(|t| t.kind == 'f'),
                "hardlink {path} points at {target}, which is not a file in the layer \
                 (it was excluded): the layer cannot be unpacked"
            );
        }
    }

    // Round trip: pull by digest into a fresh namespace and run it.
    let manifest = result["manifestDigest"].as_str().expect("manifest digest");
    let fresh = Ctr::new(&env.containerd_socket, &unique("diff-native-pull"));
    let reference = format!("{}/{repository}@{manifest}", env.registry);
    fresh.pull_plain_http(&reference);
    let out = fresh.run_once(
        &reference,
        "cat /data/keep.txt /data/b-keep /data/sub/d; readlink /data/link; tail -1 /etc/passwd; \
         ls -A /tmp | wc -l; test ! -e /data/cache && echo cache-gone; \
         test ! -e /etc/hostname && echo hostname-gone; test ! -e /data/a.log && echo log-gone; \
         stat -c %a /data/keep.txt",
    );
    assert_eq!(
        out,
        "keep\nlog\nlinked\nkeep.txt\nroot2:x:0:0::/root:/bin/sh\n0\ncache-gone\nhostname-gone\nlog-gone\n4755\n"
    );
}

/// The PAX records (other than xattrs) of one entry of a tar.
fn pax_records(tar_bytes: &[u8], wanted: &str) -> BTreeMap<String, String> {
    let mut archive = tar::Archive::new(tar_bytes);
    for item in archive.entries().expect("tar entries") {
        let mut item = item.expect("tar entry");
        let path = String::from_utf8_lossy(&item.path_bytes()).to_string();
        if path.trim_start_matches("./").trim_end_matches('/') != wanted {
            continue;
        }
        let mut records = BTreeMap::new();
        if let Some(extensions) = item.pax_extensions().expect("pax") {
            for extension in extensions {
                let extension = extension.expect("pax record");
                let key = extension.key().expect("pax key").to_string();
                if !key.starts_with("SCHILY.xattr.") {
                    let value = String::from_utf8_lossy(extension.value_bytes()).to_string();
                    records.insert(key, value);
                }
            }
        }
        return records;
    }
    panic!("no entry {wanted} in the layer");
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dcs-e2e-{name}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
