//! What the read while the desktop runs (the "bulk" pass) saw, so that the
//! pass while it is paused can find what changed since and write only that.
//!
//! "Changed" is decided by file type, inode, size and ctime, never by mtime
//! (`touch -d` forges mtime; nobody but the kernel sets ctime). Every write,
//! chmod, chown, xattr change, link or unlink moves an inode's ctime, and on
//! kernels with multigrain timestamps (6.13+, ext4/xfs/btrfs/tmpfs) a change
//! after we looked always gets a ctime different from the one we saw.
//!
//! Two holes that ctime alone leaves, and how the bulk pass closes them:
//! - A `write(2)` that started before we looked at a file bumped its ctime
//!   at its start and may still be copying while we read. Before the fstat
//!   that we record, an `lseek(SEEK_DATA)` waits for any write in progress
//!   (ext4 takes the inode lock for it); a write that starts later moves
//!   the ctime past the start of the commit, and such a file is "hot".
//! - A store through a shared writable mapping moves ctime only on the
//!   first write fault after the page was cleaned. `syncfs` of the upper
//!   directory's file system at the start of the bulk pass cleans (and
//!   write-protects) every dirty page, so any store after it faults and
//!   moves ctime past the start of the commit.
//!
//! A file whose ctime is not before the start of the commit (less a
//! margin for the coarse clock behind file times), or whose metadata moved
//! while we read it, is recorded as unstable: the paused pass reads it again.
//!
//! Memory is bounded: past `MAX_BYTES` of recorded paths the record gives
//! up (`overflowed`), and the caller falls back to one pass while paused.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::Stat;

/// Files changed this little before the commit started count as changed
/// during it: file times come from the kernel's coarse clock (one tick,
/// at most 10 ms, behind the time we read).
const HOT_MARGIN: Duration = Duration::from_millis(100);

/// Most bytes the record may hold (paths plus per-entry overhead): about
/// 200,000 entries. Beyond that the commit pauses for a whole read instead.
pub const MAX_BYTES: usize = 32 << 20;
/// Bookkeeping counted per entry on top of its path.
const ENTRY_OVERHEAD: usize = 96;

/// The state of one entry as the bulk pass wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// File type bits of `st_mode`.
    kind: u32,
    dev: u64,
    ino: u64,
    size: i64,
    ctime: (i64, i64),
    /// A directory that carried overlay's opaque marker.
    opaque: bool,
}

impl Seen {
    fn of(stat: &Stat, opaque: bool) -> Self {
        Self {
            kind: rustix::fs::FileType::from_raw_mode(stat.st_mode).as_raw_mode(),
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size,
            ctime: (stat.st_ctime, stat.st_ctime_nsec as i64),
            opaque,
        }
    }
}

/// How a whiteout is recorded (a real entry never has kind 0).
const WHITEOUT: Seen = Seen {
    kind: 0,
    dev: 0,
    ino: 0,
    size: 0,
    ctime: (0, 0),
    opaque: false,
};

#[derive(Debug, Clone, Copy)]
struct Recorded {
    seen: Seen,
    /// Read again while paused, whatever its metadata says now.
    unstable: bool,
    /// Found again by the paused pass.
    visited: bool,
}

/// Everything the bulk pass wrote, by path relative to the upper directory.
#[derive(Debug, Clone)]
pub struct Record {
    /// Files with a ctime from this instant on are hot.
    hot_from: (i64, i64),
    entries: HashMap<Vec<u8>, Recorded>,
    bytes: usize,
    overflowed: bool,
    /// Paused pass: directories that exist now, and those written with an
    /// opaque marker (everything below them is in the delta already).
    dirs_now: HashSet<Vec<u8>>,
    opaque_now: HashSet<Vec<u8>>,
}

/// How an entry compares, in the paused pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    /// Written by the bulk pass exactly as it is now.
    Same,
    /// New, or different from what the bulk pass wrote.
    Changed,
}

impl Record {
    /// A record for a bulk pass starting now.
    pub fn starting_now() -> Self {
        let since = SystemTime::now()
            .checked_sub(HOT_MARGIN)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            hot_from: (since.as_secs() as i64, i64::from(since.subsec_nanos())),
            entries: HashMap::new(),
            bytes: 0,
            overflowed: false,
            dirs_now: HashSet::new(),
            opaque_now: HashSet::new(),
        }
    }

    /// The record grew past its memory bound; it cannot be trusted.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Notes an entry as the bulk pass wrote it. `before` is its metadata
    /// before its data was read, `after` (files only) the metadata of the
    /// open file once read.
    pub fn note(&mut self, path: &[u8], before: &Stat, after: Option<&Stat>, opaque: bool) {
        let seen = Seen::of(before, opaque);
        let unstable = match after {
            Some(after) => {
                Seen::of(after, opaque) != seen
                    || (before.st_ctime, before.st_ctime_nsec as i64) >= self.hot_from
            }
            None => false,
        };
        self.add(path, seen, unstable);
    }

    /// Notes a further name of a file whose first name was noted: it holds
    /// the data read under that name, so it is as stable as that was.
    pub fn note_link(&mut self, path: &[u8], first: &[u8]) {
        if let Some(recorded) = self.entries.get(first).copied() {
            self.add(path, recorded.seen, recorded.unstable);
        }
    }

    /// Notes a whiteout: only that it is one counts (on some kernels all
    /// whiteouts share one inode, whose ctime moves with each of them).
    pub fn note_whiteout(&mut self, path: &[u8]) {
        self.add(path, WHITEOUT, false);
    }

    /// Compares a whiteout the paused pass finds with the record.
    pub fn compare_whiteout(&mut self, path: &[u8]) -> Compared {
        match self.entries.get_mut(path) {
            Some(recorded) => {
                recorded.visited = true;
                if recorded.seen == WHITEOUT {
                    Compared::Same
                } else {
                    Compared::Changed
                }
            }
            None => Compared::Changed,
        }
    }

    fn add(&mut self, path: &[u8], seen: Seen, unstable: bool) {
        if self.overflowed {
            return;
        }
        self.bytes += path.len() + ENTRY_OVERHEAD;
        if self.bytes > MAX_BYTES {
            self.overflowed = true;
            self.entries = HashMap::new();
            return;
        }
        self.entries.insert(
            path.to_vec(),
            Recorded {
                seen,
                unstable,
                visited: false,
            },
        );
    }

    /// Compares an entry as the paused pass finds it with the record.
    pub fn compare(&mut self, path: &[u8], now: &Stat) -> Compared {
        let Some(recorded) = self.entries.get_mut(path) else {
            return Compared::Changed;
        };
        recorded.visited = true;
        // The opaque flag is compared by the caller (it needs the xattrs,
        // and their change moves ctime anyway).
        let now = Seen::of(now, recorded.seen.opaque);
        if recorded.unstable || now != recorded.seen {
            Compared::Changed
        } else {
            Compared::Same
        }
    }

    /// Whether the bulk pass wrote this directory with an opaque marker
    /// that still stands: same directory, unchanged.
    pub fn was_opaque(&self, path: &[u8], now: &Stat) -> bool {
        self.entries
            .get(path)
            .is_some_and(|r| r.seen.opaque && r.seen.ino == now.st_ino && r.seen.dev == now.st_dev)
    }

    /// Paused pass: `path` is a directory now; `opaque` when the delta
    /// writes an opaque marker for it.
    pub fn directory_now(&mut self, path: &[u8], opaque: bool) {
        self.dirs_now.insert(path.to_vec());
        if opaque {
            self.opaque_now.insert(path.to_vec());
        }
    }

    /// Paths the bulk pass wrote that are gone now and need a whiteout in
    /// the delta: those whose parent is still a directory (a parent that is
    /// gone or became something else hides them by its own entry), and not
    /// under a marker the delta writes. Sorted, so the layer is the same
    /// for the same change.
    pub fn deleted(&self) -> Vec<Vec<u8>> {
        let mut gone: Vec<Vec<u8>> = self
            .entries
            .iter()
            .filter(|(_, r)| !r.visited)
            .map(|(p, _)| p.clone())
            .filter(|p| {
                let parent = parent_of(p);
                (parent.is_empty() || self.dirs_now.contains(parent))
                    && !self.opaque_now.contains(parent)
            })
            .collect();
        gone.sort();
        gone
    }
}

/// The parent of a relative path (empty for a top-level name).
pub fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_of(path: &std::path::Path) -> Stat {
        rustix::fs::lstat(path).unwrap()
    }

    #[test]
    fn an_old_file_read_whole_is_the_same_later() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"one").unwrap();
        let stat = stat_of(&file);
        // A record that started well after the file was written.
        let mut record = Record::starting_now();
        record.hot_from = (stat.st_ctime + 10, 0);
        record.note(b"f", &stat, Some(&stat), false);
        assert_eq!(record.compare(b"f", &stat_of(&file)), Compared::Same);
        assert!(record.deleted().is_empty());
    }

    #[test]
    fn a_write_moves_ctime_even_with_a_forged_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"one").unwrap();
        let before = stat_of(&file);
        let mut record = Record::starting_now();
        record.hot_from = (before.st_ctime + 10, 0);
        record.note(b"f", &before, Some(&before), false);
        std::fs::write(&file, b"two").unwrap();
        // Same size, mtime put back: only ctime tells.
        let mtime = std::fs::FileTimes::new().set_modified(
            UNIX_EPOCH + Duration::new(before.st_mtime as u64, before.st_mtime_nsec as u32),
        );
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_times(mtime)
            .unwrap();
        assert_eq!(record.compare(b"f", &stat_of(&file)), Compared::Changed);
    }

    #[test]
    fn a_file_changed_since_the_start_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        let mut record = Record::starting_now();
        std::fs::write(&file, b"new").unwrap();
        let stat = stat_of(&file);
        record.note(b"f", &stat, Some(&stat), false);
        assert_eq!(record.compare(b"f", &stat), Compared::Changed);
    }

    #[test]
    fn deleted_entries_get_whiteouts_only_where_the_parent_stands() {
        let dir = tempfile::tempdir().unwrap();
        let stat = stat_of(dir.path());
        let mut record = Record::starting_now();
        for path in [
            &b"a"[..],
            b"d",
            b"d/x",
            b"d/y",
            b"gone",
            b"gone/z",
            b"o",
            b"o/w",
        ] {
            record.note(path, &stat, None, false);
        }
        // Now: `a` and `d/y` deleted, `gone` replaced by a file, `o` opaque.
        record.compare(b"d", &stat);
        record.compare(b"d/x", &stat);
        record.compare(b"gone", &stat);
        record.compare(b"o", &stat);
        record.directory_now(b"d", false);
        record.directory_now(b"o", true);
        assert_eq!(record.deleted(), vec![b"a".to_vec(), b"d/y".to_vec()]);
    }

    #[test]
    fn the_record_gives_up_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let stat = stat_of(dir.path());
        let mut record = Record::starting_now();
        let long = vec![b'x'; 4096];
        for _ in 0..=MAX_BYTES / (4096 + ENTRY_OVERHEAD) {
            record.note(&long, &stat, None, false);
        }
        assert!(record.overflowed());
        assert!(record.is_empty());
    }
}
