//! The overlay walker against a hostile upper directory, without containerd:
//! links to host files, names swapped while we read, FIFOs and devices, and
//! trees deeper than any path the kernel accepts. (The same attacks from a
//! real container are in the end-to-end suite, `tests/tests/hostile_fs.rs`.)

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use node_agent::layer::archive::TarWriter;
use node_agent::layer::overlay::{OverlayUpper, write_changes};
use node_agent::layer::{Excludes, WalkStats};
use node_agent::scan::Scanner;
use rustix::fs::{FileType, Mode, OFlags, RenameFlags};

/// A secret of the host: no layer may ever contain it.
const CANARY: &[u8] = b"HOST-CANARY-4f1d2b9e-never-in-a-layer";

fn upper(path: &Path) -> OverlayUpper {
    OverlayUpper::from_mount(
        "overlay",
        &[format!("upperdir={}", path.display()), "userxattr".into()],
    )
    .expect("overlay mount")
}

/// Walks `dir` into an uncompressed tar.
fn walk(dir: &Path) -> Result<(Vec<u8>, WalkStats), String> {
    let mut tar = TarWriter::new(Vec::new());
    let stats = write_changes(
        &upper(dir),
        &Excludes::none(),
        &mut Scanner::new(),
        &mut tar,
    )
    .map_err(|e| e.to_string())?;
    Ok((tar.finish().expect("finish"), stats))
}

/// Path -> (kind, link target, content) of each entry.
fn entries(tar_bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, String, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut map = BTreeMap::new();
    for item in archive.entries().expect("entries") {
        let mut item = item.expect("entry");
        let path = String::from_utf8_lossy(&item.path_bytes())
            .trim_end_matches('/')
            .to_string();
        let kind = item.header().entry_type();
        let link = item
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).to_string())
            .unwrap_or_default();
        let mut content = Vec::new();
        item.read_to_end(&mut content).expect("content");
        map.insert(path, (kind, link, content));
    }
    map
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A host directory holding the canary, outside the upper directory.
fn host_secret(root: &Path) -> std::path::PathBuf {
    let host = root.join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret"), CANARY).unwrap();
    host
}

#[test]
fn links_to_host_files_are_recorded_never_followed() {
    let root = tempfile::tempdir().unwrap();
    let host = host_secret(root.path());
    let up = root.path().join("upper");
    std::fs::create_dir_all(up.join("p")).unwrap();
    std::os::unix::fs::symlink(host.join("secret"), up.join("p/file-link")).unwrap();
    std::os::unix::fs::symlink(&host, up.join("p/dir-link")).unwrap();
    std::os::unix::fs::symlink("../../host/secret", up.join("p/relative")).unwrap();
    std::fs::write(up.join("p/plain"), b"mine").unwrap();

    let (tar_bytes, _) = walk(&up).unwrap();
    assert!(!contains(&tar_bytes, CANARY), "the host's file leaked");
    let found = entries(&tar_bytes);
    assert_eq!(found["p/file-link"].0, tar::EntryType::Symlink);
    assert_eq!(
        found["p/file-link"].1,
        host.join("secret").to_string_lossy()
    );
    assert_eq!(found["p/dir-link"].0, tar::EntryType::Symlink);
    assert_eq!(found["p/relative"].1, "../../host/secret");
    assert_eq!(found["p/plain"].2, b"mine");
    assert!(!found.keys().any(|k| k.starts_with("p/dir-link/")));
}

#[test]
fn fifos_and_devices_are_recorded_never_opened() {
    let root = tempfile::tempdir().unwrap();
    let up = root.path().join("upper");
    std::fs::create_dir_all(&up).unwrap();
    let dir = rustix::fs::open(&up, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    // A FIFO nobody writes to: opening it for reading would block for ever.
    rustix::fs::mknodat(&dir, "fifo", FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    // The host's /dev/zero, as a node inside the container: reading it would
    // never end.
    rustix::fs::mknodat(
        &dir,
        "zero",
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 5),
    )
    .unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let path = up.clone();
    std::thread::spawn(move || tx.send(walk(&path)).unwrap());
    let (tar_bytes, _) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the walk blocked: it opened a FIFO or a device")
        .unwrap();
    let found = entries(&tar_bytes);
    assert_eq!(found["fifo"].0, tar::EntryType::Fifo);
    assert_eq!(found["zero"].0, tar::EntryType::Char);
    assert!(found["zero"].2.is_empty());
}

/// Swaps two names in a loop, as a tenant's program would, until stopped.
fn swapper(dir: OwnedFd, a: &'static str, b: &'static str, stop: Arc<AtomicBool>) -> usize {
    let mut swaps = 0;
    while !stop.load(Ordering::Relaxed) {
        if rustix::fs::renameat_with(&dir, a, &dir, b, RenameFlags::EXCHANGE).is_ok() {
            swaps += 1;
        }
    }
    swaps
}

#[test]
fn names_swapped_during_the_walk_never_lead_outside() {
    let root = tempfile::tempdir().unwrap();
    let host = host_secret(root.path());
    let up = root.path().join("upper");
    // file <-> symlink to a host file, and directory <-> symlink to a host
    // directory, each swapped continuously.
    std::fs::create_dir_all(up.join("f")).unwrap();
    std::fs::write(up.join("f/a"), b"harmless").unwrap();
    std::os::unix::fs::symlink(host.join("secret"), up.join("f/b")).unwrap();
    std::fs::create_dir_all(up.join("d/a")).unwrap();
    std::fs::write(up.join("d/a/inner"), b"inner").unwrap();
    std::os::unix::fs::symlink(&host, up.join("d/b")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for sub in ["f", "d"] {
        let dir = rustix::fs::open(
            up.join(sub),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || swapper(dir, "a", "b", stop)));
    }
    let mut succeeded = 0;
    let rounds = 300;
    for _ in 0..rounds {
        // A failed walk is allowed (the tree moved under it), a leak never.
        if let Ok((tar_bytes, _)) = walk(&up) {
            assert!(!contains(&tar_bytes, CANARY), "the host's file leaked");
            for (path, (kind, _, _)) in entries(&tar_bytes) {
                if path.starts_with("d/") && path.ends_with("/secret") {
                    panic!("walked into the host's directory: {path} ({kind:?})");
                }
            }
            succeeded += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(swaps > 1000, "the names were hardly swapped ({swaps})");
    assert!(
        succeeded * 100 >= rounds * 95,
        "only {succeeded} of {rounds} walks succeeded"
    );
}
