//! The bulk and delta passes on a plain directory standing in for an
//! overlay upper directory: the delta holds exactly what changed after the
//! bulk pass, hard links together, and whiteouts for what is gone.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::archive::TarWriter;
use super::overlay::{OverlayUpper, WalkMode, write_changes_with};
use super::{Excludes, Record};

/// (path, type, data) of every entry of a tar.
fn entries(tar: &[u8]) -> BTreeMap<String, (char, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    let mut found = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Link => 'h',
            tar::EntryType::Symlink => 'l',
            _ => '?',
        };
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_end_matches('/')
            .to_string();
        let mut data = Vec::new();
        if kind == 'h' {
            data = entry.link_name_bytes().unwrap().to_vec();
        } else {
            entry.read_to_end(&mut data).unwrap();
        }
        found.insert(path, (kind, data));
    }
    found
}

fn pass(upper: &Path, mode: WalkMode<'_>) -> BTreeMap<String, (char, Vec<u8>)> {
    let upper = OverlayUpper {
        path: upper.to_path_buf(),
        xattr_prefix: "trusted.overlay.",
    };
    let mut tar = TarWriter::new(Vec::new());
    let mut scanner = crate::scan::Scanner::new();
    write_changes_with(&upper, &Excludes::none(), mode, &mut scanner, &mut tar).unwrap();
    entries(&tar.finish().unwrap())
}

#[test]
fn the_delta_holds_what_changed_after_the_bulk_pass() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path();
    std::fs::write(up.join("a"), b"one").unwrap();
    std::fs::create_dir(up.join("d")).unwrap();
    std::fs::write(up.join("d/x"), b"x").unwrap();
    std::fs::write(up.join("d/y"), b"y").unwrap();
    std::fs::write(up.join("gone"), b"bye").unwrap();
    std::fs::write(up.join("hl1"), b"linked").unwrap();
    std::fs::hard_link(up.join("hl1"), up.join("hl2")).unwrap();
    std::fs::create_dir(up.join("moved")).unwrap();
    std::fs::write(up.join("moved/inner"), b"in").unwrap();
    std::fs::write(up.join("still"), b"still").unwrap();
    // Older than the margin for "changed just before the commit".
    std::thread::sleep(Duration::from_millis(200));

    let mut record = Record::starting_now();
    let bulk = pass(up, WalkMode::Bulk(&mut record));
    assert_eq!(bulk.len(), 10, "{:?}", bulk.keys());
    assert!(!record.overflowed());

    // Nothing changed: the delta is empty.
    let idle = pass(up, WalkMode::Delta(&mut record.clone()));
    assert!(idle.is_empty(), "{:?}", idle.keys());

    std::fs::write(up.join("a"), b"two").unwrap(); // same size
    std::fs::remove_file(up.join("gone")).unwrap();
    std::fs::write(up.join("d/z"), b"z").unwrap();
    std::fs::write(up.join("hl1"), b"LINKED").unwrap();
    std::fs::rename(up.join("moved"), up.join("renamed")).unwrap();

    let delta = pass(up, WalkMode::Delta(&mut record));
    let kinds: BTreeMap<&str, char> = delta.iter().map(|(p, (k, _))| (p.as_str(), *k)).collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            (".wh.gone", 'f'),
            (".wh.moved", 'f'),
            ("a", 'f'),
            ("d", 'd'),
            ("d/z", 'f'),
            ("hl1", 'f'),
            ("hl2", 'h'),
            ("renamed", 'd'),
            ("renamed/inner", 'f'),
        ]),
        "{:?}",
        delta.keys()
    );
    assert_eq!(delta["a"].1, b"two");
    assert_eq!(delta["hl1"].1, b"LINKED");
    assert_eq!(delta["hl2"].1, b"hl1");
}

#[test]
fn a_file_written_just_before_the_commit_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path();
    std::fs::write(up.join("old"), b"old").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(up.join("hot"), b"hot").unwrap();
    let mut record = Record::starting_now();
    pass(up, WalkMode::Bulk(&mut record));
    let delta = pass(up, WalkMode::Delta(&mut record));
    assert_eq!(delta.keys().collect::<Vec<_>>(), ["hot"]);
}
