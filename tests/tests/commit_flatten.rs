//! Flatten on real containerd, runc and registry, on both snapshotters.
//!
//! A 3-generation chain on busybox: v1 adds a 50 MB file, v2 deletes it
//! (and a file of the base), v3 changes more. The v3 container is
//! committed twice: appended (busybox + v1 + v2 + v3 layers) and flattened
//! onto busybox (busybox's layers + one). The flattened layer must not
//! hold the deleted file, and both images, pulled into a fresh namespace
//! and run, must have the same file tree, entry by entry: kinds, modes,
//! owners, xattrs, links, hard-link groups and content hashes.

use e2e_tests::layer::{decompress, entries};
use e2e_tests::tree::{self, Tree};
use e2e_tests::{Ctr, TestEnv, commit, commit_output, container_rootfs, set_xattr, unique};
use serde_json::Value;

const BIG_MB: u64 = 50;

fn generation_1() -> String {
    format!(
        r#"set -e
mkdir -p /data/keep /data/opaque/old /opt/tool
dd if=/dev/urandom of=/data/big.bin bs=1M count={BIG_MB} 2>/dev/null
echo v1 > /data/keep/a.txt
echo v1 > /data/modify.txt
echo linked > /data/hl1 && ln /data/hl1 /data/hl2
ln -s /data/keep/a.txt /data/abs-link
echo old > /data/opaque/old/f
echo tool > /opt/tool/bin && chmod 4755 /opt/tool/bin
echo owned > /data/owned && chown 1000:1000 /data/owned
mkfifo /data/fifo
"#
    )
}

const GENERATION_2: &str = r#"set -e
rm /data/big.bin
rm /etc/group
echo v2 > /data/modify.txt
echo v2 >> /data/keep/a.txt
mkdir -p /data/v2 && echo two > /data/v2/file && echo stays > /data/v2/stays
rm -rf /data/opaque && mkdir /data/opaque && echo new > /data/opaque/new
"#;

const GENERATION_3: &str = r#"set -e
echo v3 > /data/v3.txt
chmod 0600 /data/keep/a.txt
rm /data/v2/file
ln -s ../keep/a.txt /data/rel-link
echo linked3 > /data/hl3 && ln /data/hl3 /data/hl4
rm /bin/vi
mkdir /data/sticky && chmod 1777 /data/sticky
"#;

/// The chain, committed: the v3 container's id and each generation's
/// commit output.
struct Chain {
    ctr: Ctr,
    namespace: String,
    snapshotter: &'static str,
    busybox: &'static str,
    v1: Value,
    v1_ref: String,
}

fn build_chain(env: &TestEnv, snapshotter: &'static str) -> Chain {
    let namespace = unique("flatten");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox(snapshotter);
    let sleep = ["sleep", "3600"];

    ctr.run_detached("gen1", busybox, snapshotter, &sleep);
    ctr.exec("gen1", &generation_1());
    set_xattr(
        &container_rootfs(&namespace, "gen1").join("data/keep/a.txt"),
        "user.generation",
        b"1",
    );
    let v1_ref = format!("{}/{namespace}/desk:v1", env.registry);
    let v1 = commit(
        env,
        &env.containerd_socket,
        &namespace,
        "gen1",
        &v1_ref,
        &[],
    );

    ctr.run_detached("gen2", &v1_ref, snapshotter, &sleep);
    ctr.exec("gen2", GENERATION_2);
    let v2_ref = format!("{}/{namespace}/desk:v2", env.registry);
    commit(
        env,
        &env.containerd_socket,
        &namespace,
        "gen2",
        &v2_ref,
        &[],
    );

    ctr.run_detached("gen3", &v2_ref, snapshotter, &sleep);
    ctr.exec("gen3", GENERATION_3);
    set_xattr(
        &container_rootfs(&namespace, "gen3").join("data/v3.txt"),
        "user.generation",
        b"3",
    );
    Chain {
        ctr,
        namespace,
        snapshotter,
        busybox,
        v1,
        v1_ref,
    }
}

impl Chain {
    fn commit_v3(&self, env: &TestEnv, tag: &str, extra: &[&str]) -> (String, Value) {
        let target = format!("{}/{}/desk:{tag}", env.registry, self.namespace);
        let result = commit(
            env,
            &env.containerd_socket,
            &self.namespace,
            "gen3",
            &target,
            extra,
        );
        // The image is in the registry only: its documents and layers are
        // read here, so they are fetched into the namespace.
        self.ctr.run(&["content", "fetch", "--plain-http", &target]);
        (target, result)
    }
}

/// The file tree of `reference` pulled by digest into a fresh namespace
/// and run.
fn tree_of_running(env: &TestEnv, snapshotter: &str, repository: &str, digest: &str) -> Tree {
    let namespace = unique("flat-run");
    let fresh = Ctr::new(&env.containerd_socket, &namespace);
    let by_digest = format!("{}/{repository}@{digest}", env.registry);
    fresh.run(&[
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        snapshotter,
        &by_digest,
    ]);
    fresh.run_detached("run", &by_digest, snapshotter, &["sleep", "3600"]);
    let tree = tree::describe(&container_rootfs(&namespace, "run"));
    assert!(
        tree.get("data/v3.txt")
            .is_some_and(|d| d.contains("user.generation")),
        "the running image has v3's file with its xattr: {:?}",
        tree.get("data/v3.txt")
    );
    tree
}

fn assert_same_tree(appended: &Tree, flattened: &Tree, what: &str) {
    let differences = tree::differences(appended, flattened, 20);
    assert!(
        differences.is_empty(),
        "{what}: the flattened image's tree differs from the appended one's \
         (path, appended, flattened):\n{differences:#?}"
    );
    // busybox's tree (its applets are links to one binary) and ours.
    assert!(
        appended.len() > 100 && appended.contains_key("bin/busybox"),
        "{} entries walked: {appended:#?}",
        appended.len()
    );
}

fn layer_entries(chain: &Chain, digest: &str) -> Vec<String> {
    let tar = decompress(&chain.ctr.content_get(digest));
    entries(&tar).into_keys().collect()
}

fn manifest(chain: &Chain, digest: &str) -> Value {
    serde_json::from_slice(&chain.ctr.content_get(digest)).expect("manifest JSON")
}

/// The chain on `snapshotter`, flattened onto busybox and compared.
fn flatten_onto_the_base(env: &TestEnv, snapshotter: &'static str) -> Chain {
    let chain = build_chain(env, snapshotter);
    let (_, appended) = chain.commit_v3(env, "v3", &[]);
    let (_, flat) = chain.commit_v3(env, "v3-flat", &["--flatten-base", chain.busybox]);

    let appended_manifest = manifest(&chain, appended["manifestDigest"].as_str().unwrap());
    let flat_manifest = manifest(&chain, flat["manifestDigest"].as_str().unwrap());
    let appended_layers = appended_manifest["layers"].as_array().unwrap();
    let flat_layers = flat_manifest["layers"].as_array().unwrap();
    let base_layers = flat["layerCount"].as_u64().unwrap() as usize - 1;
    assert_eq!(flat["flattened"], true);
    assert_eq!(flat["method"], "diff-service");
    assert_eq!(flat_layers.len(), base_layers + 1, "{flat_manifest}");
    assert!(
        appended_layers.len() >= base_layers + 3,
        "v1, v2 and v3 each added a layer: {appended_manifest}"
    );
    // The appended commit added one layer, or two (files changed within
    // seconds of it are read again while paused, as a delta layer).
    let appended_new = 1 + usize::from(!appended["deltaLayer"].is_null());
    assert_eq!(
        flat["layersMerged"].as_u64().unwrap() as usize,
        appended_layers.len() - appended_new - base_layers,
        "every layer above the base that v3 ran on was merged"
    );
    assert_eq!(
        flat_layers[..base_layers],
        appended_layers[..base_layers],
        "the base's layers are kept as they are"
    );
    assert_eq!(
        flat_manifest["annotations"]["org.opencontainers.image.base.name"], chain.busybox,
        "the flattened image names the base whose layers it carries"
    );
    let config: Value = serde_json::from_slice(
        &chain
            .ctr
            .content_get(flat_manifest["config"]["digest"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        base_layers + 1
    );
    let history = config["history"].as_array().unwrap();
    let made_layers = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(made_layers, base_layers + 1, "{history:?}");
    assert!(
        history.last().unwrap()["created_by"]
            .as_str()
            .unwrap()
            .contains("flattened"),
        "{history:?}"
    );

    // The deleted 50 MB file costs nothing: not in the layer, not in its size.
    let flat_layer = flat["layer"]["digest"].as_str().unwrap();
    let paths = layer_entries(&chain, flat_layer);
    assert!(
        !paths.iter().any(|p| p.contains("big.bin")),
        "the file v1 added and v2 deleted is absent from the flattened layer: {paths:?}"
    );
    assert!(paths.iter().any(|p| p == "etc/.wh.group"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "data/v2/stays"), "{paths:?}");
    let uncompressed = flat["layer"]["uncompressedSize"].as_u64().unwrap();
    assert!(
        uncompressed < 2 * 1024 * 1024,
        "the flattened layer is {uncompressed} bytes decompressed"
    );

    let repository = format!("{}/desk", chain.namespace);
    let appended_tree = tree_of_running(
        env,
        snapshotter,
        &repository,
        appended["manifestDigest"].as_str().unwrap(),
    );
    let flat_tree = tree_of_running(
        env,
        snapshotter,
        &repository,
        flat["manifestDigest"].as_str().unwrap(),
    );
    assert_same_tree(&appended_tree, &flat_tree, snapshotter);
    for (path, expected) in [
        ("data/big.bin", None),
        ("etc/group", None),
        ("bin/vi", None),
        ("data/v2/file", None),
        ("data/opaque/old", None),
        ("data/opaque/new", Some("f mode=644")),
        ("data/keep/a.txt", Some("f mode=600 owner=0:0 xattrs")),
        ("opt/tool/bin", Some("f mode=4755")),
        ("data/owned", Some("f mode=644 owner=1000:1000")),
        ("data/fifo", Some("p ")),
        ("data/sticky", Some("d mode=1777")),
        (
            "data/rel-link",
            Some("l mode=777 owner=0:0 -> ../keep/a.txt"),
        ),
        ("data/hl2", Some("linked-with=data/hl1")),
        ("data/hl4", Some("linked-with=data/hl3")),
    ] {
        match expected {
            None => assert!(!flat_tree.contains_key(path), "{path} is gone"),
            Some(text) => assert!(
                flat_tree.get(path).is_some_and(|d| d.contains(text)),
                "{path}: {:?}, expected {text:?}",
                flat_tree.get(path)
            ),
        }
    }
    chain
}

#[test]
fn a_flattened_chain_runs_like_the_appended_one_on_overlayfs() {
    let env = TestEnv::get();
    let chain = flatten_onto_the_base(&env, "overlayfs");

    // Onto a base in the middle of the chain (v1), whose manifest
    // containerd no longer has: it is read from the registry.
    let v1_digest = chain.v1["manifestDigest"].as_str().unwrap().to_string();
    chain.ctr.run(&["images", "rm", "--sync", &chain.v1_ref]);
    let (gone, _, _) = chain.ctr.try_run(&["content", "get", &v1_digest]);
    assert!(!gone, "v1's manifest left containerd's content store");
    let onto_v1 = format!("{}@{v1_digest}", chain.v1_ref);
    let (_, flat) = chain.commit_v3(&env, "v3-on-v1", &["--flatten-base", &onto_v1]);
    assert_eq!(
        flat["layerCount"].as_u64(),
        Some(chain.v1["layerCount"].as_u64().unwrap() + 1)
    );
    let repository = format!("{}/desk", chain.namespace);
    let (_, appended) = chain.commit_v3(&env, "v3-again", &[]);
    let appended_tree = tree_of_running(
        &env,
        chain.snapshotter,
        &repository,
        appended["manifestDigest"].as_str().unwrap(),
    );
    let flat_tree = tree_of_running(
        &env,
        chain.snapshotter,
        &repository,
        flat["manifestDigest"].as_str().unwrap(),
    );
    assert_same_tree(&appended_tree, &flat_tree, "onto v1");
}

#[test]
fn a_flattened_chain_runs_like_the_appended_one_on_native() {
    let env = TestEnv::get();
    flatten_onto_the_base(&env, "native");
}

/// A base that is not what the container's image is built on, one that
/// is no manifest, and one that exists nowhere: each refused before
/// anything is pushed, with a sentence that says why.
#[test]
fn hostile_flatten_bases_are_refused_and_nothing_is_pushed() {
    let env = TestEnv::get();
    let namespace = unique("flat-hostile");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let busybox = ctr.import_busybox("overlayfs");
    ctr.run_detached("other", busybox, "overlayfs", &["sleep", "3600"]);
    ctr.exec(
        "other",
        "echo other > /other && dd if=/dev/urandom of=/big bs=1M count=6 2>/dev/null",
    );
    let other_ref = format!("{}/{namespace}/other:1", env.registry);
    let other = commit(
        &env,
        &env.containerd_socket,
        &namespace,
        "other",
        &other_ref,
        // Kept on the node: named as a flatten base through containerd below.
        &["--local-image"],
    );
    ctr.run_detached("desk", busybox, "overlayfs", &["sleep", "3600"]);
    ctr.exec("desk", "echo mine > /mine");
    let v1_ref = format!("{}/{namespace}/desk:v1", env.registry);
    commit(
        &env,
        &env.containerd_socket,
        &namespace,
        "desk",
        &v1_ref,
        &[],
    );
    ctr.run_detached("desk2", &v1_ref, "overlayfs", &["sleep", "3600"]);

    let big_layer = other["layer"]["digest"].as_str().unwrap();
    let cases = [
        // Another image on the same base: its layers are not desk's.
        (other_ref.clone(), "is not the base of the image"),
        // A layer blob named as a manifest.
        (
            format!("{other_ref}@{big_layer}"),
            "more than a manifest may have",
        ),
        // A digest nobody has.
        (
            format!("{other_ref}@sha256:{}", "0".repeat(64)),
            "could not be read",
        ),
        // Not a reference at all.
        (
            "UPPER CASE/../x@sha256:00".to_string(),
            "is not an image reference",
        ),
    ];
    // A commit of desk2 flattened onto `base` fails, saying `expected`.
    let refused = |tag: &str, base: &str, expected: &str| {
        let target = format!("{}/{namespace}/desk:{tag}", env.registry);
        let output = commit_output(
            &env,
            &env.containerd_socket,
            &namespace,
            "desk2",
            &target,
            &["--flatten-base", base],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{base}: {stderr}");
        assert!(stderr.contains(expected), "{base}: {stderr}");
        target
    };
    for (i, (base, expected)) in cases.iter().enumerate() {
        let target = refused(&format!("refused-{i}"), base, expected);
        let (pulled, _, _) = ctr.try_run(&["images", "pull", "--plain-http", &target]);
        assert!(!pulled, "nothing was pushed for {base}");
    }
    // The tag desk2's image was looked up by now names another image
    // (same base): its layers are not what desk2's file system was made of.
    ctr.run(&["images", "tag", "--force", &other_ref, &v1_ref]);
    refused(
        "moved-tag",
        busybox,
        "was not made from this image's layers",
    );
    // The desktop was never left paused.
    let state = ctr.run(&["tasks", "ls"]);
    assert!(
        state
            .lines()
            .any(|l| l.starts_with("desk2") && l.contains("RUNNING")),
        "{state}"
    );
}
