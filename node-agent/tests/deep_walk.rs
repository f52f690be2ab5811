//! A tree deeper than the kernel's path limit, walked with a bounded number
//! of open descriptors. Its own test binary: it counts the process's
//! descriptors, which other tests running alongside would disturb.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use node_agent::layer::Excludes;
use node_agent::layer::archive::TarWriter;
use node_agent::layer::overlay::{OverlayUpper, write_changes};
use node_agent::scan::Scanner;
use rustix::fs::{Mode, OFlags};

fn upper(path: &Path) -> OverlayUpper {
    OverlayUpper::from_mount("overlay", &[format!("upperdir={}", path.display())])
        .expect("overlay mount")
}

/// Path -> content of each regular file.
fn file_contents(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut map = BTreeMap::new();
    for item in archive.entries().expect("entries") {
        let mut item = item.expect("entry");
        if item.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&item.path_bytes()).to_string();
        let mut content = Vec::new();
        item.read_to_end(&mut content).expect("content");
        map.insert(path, content);
    }
    map
}

/// Samples this process's open descriptors every millisecond until `stop`.
fn sample_descriptors(stop: Arc<AtomicBool>, max: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count();
        max.fetch_max(open, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// 10,000 levels, deeper than the kernel's 4,096-byte path limit, each level
/// with a directory and a file after it (so every level is still open when
/// the walk goes down): the walk finishes, with a bounded number of open
/// descriptors, and writes every level.
#[test]
fn a_tree_deeper_than_path_max_is_walked_with_bounded_descriptors() {
    const DEPTH: usize = 10_000;
    let root = tempfile::tempdir().unwrap();
    let up = root.path().join("upper");
    std::fs::create_dir_all(&up).unwrap();
    let mut dir = rustix::fs::open(&up, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for level in 0..DEPTH {
        let file = rustix::fs::openat(
            &dir,
            "z",
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&file, level.to_string().as_bytes()).unwrap();
        rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(&dir, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .unwrap();
    }
    drop(dir);

    let before = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let max_fds = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, max_fds) = (stop.clone(), max_fds.clone());
        std::thread::spawn(move || sample_descriptors(stop, max_fds))
    };
    let mut tar = TarWriter::new(std::io::sink());
    let started = Instant::now();
    let stats = write_changes(
        &upper(&up),
        &Excludes::none(),
        &mut Scanner::new(),
        &mut tar,
    )
    .unwrap();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(stats.files, DEPTH as u64);
    assert_eq!(stats.entries, 2 * DEPTH as u64);
    let extra = max_fds.load(Ordering::Relaxed).saturating_sub(before);
    assert!(extra <= 100, "{extra} descriptors open at once");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    eprintln!("deep walk: {DEPTH} levels in {elapsed:?}, at most {extra} extra descriptors");

    // And the content of the deepest levels is right.
    let mut tar = TarWriter::new(Vec::new());
    write_changes(
        &upper(&up),
        &Excludes::none(),
        &mut Scanner::new(),
        &mut tar,
    )
    .unwrap();
    let found = file_contents(&tar.finish().unwrap());
    let deepest = format!("{}z", "d/".repeat(DEPTH - 1));
    assert_eq!(found[&deepest], (DEPTH - 1).to_string().as_bytes());
    assert_eq!(found["d/z"], b"1");
}
