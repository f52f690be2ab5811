//! The fast path: a container's changes on the `overlayfs` snapshotter are
//! exactly the files in its overlay upper directory, so reading that one
//! directory costs what the change costs, whatever the size of the image.
//!
//! Overlay records deletions in its own way; OCI layers use another:
//! - a whiteout (character device 0:0) becomes an empty `.wh.<name>` file;
//! - an opaque directory (xattr `trusted.overlay.opaque=y`) gets a
//!   `.wh..wh..opq` entry, hiding everything the lower layers had in it.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, Stat};

use super::LayerError;
use super::archive::{Entry, EntryKind, EntrySink, Xattrs};
use super::exclude::Excludes;
use super::pinned::{Pinned, entry_proc_path, list_names, reopen_directory};
use super::record::{Compared, Record};
use super::xattr::{XattrTarget, read_xattrs};
use crate::scan::Scanner;

/// What the walk found, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkStats {
    pub entries: u64,
    pub files: u64,
    pub whiteouts: u64,
    pub opaque_directories: u64,
    pub hardlinks: u64,
    pub excluded: u64,
    /// Sockets cannot be stored in a tar; they are skipped, like containerd does.
    pub sockets_skipped: u64,
    pub file_bytes: u64,
}

/// Where overlay keeps its own metadata: `trusted.overlay.` normally,
/// `user.overlay.` when the mount uses the `userxattr` option (rootless).
#[derive(Debug, Clone)]
pub struct OverlayUpper {
    pub path: PathBuf,
    pub xattr_prefix: &'static str,
}

impl OverlayUpper {
    /// Reads the upper directory out of a container snapshot's mounts;
    /// `None` when the mounts are not a single overlay mount.
    pub fn from_mount(mount_type: &str, options: &[String]) -> Option<Self> {
        if mount_type != "overlay" {
            return None;
        }
        let upper = options.iter().find_map(|o| o.strip_prefix("upperdir="))?;
        let userxattr = options.iter().any(|o| o == "userxattr");
        Some(Self {
            path: PathBuf::from(upper),
            xattr_prefix: if userxattr {
                "user.overlay."
            } else {
                "trusted.overlay."
            },
        })
    }
}

/// At most this many directory descriptors stay open during a walk,
/// however deep the tree: deeper ones are closed and re-opened on the way
/// back up (checked to be the same directory).
const OPEN_DIRECTORIES: usize = 64;

/// What a walk writes.
#[derive(Debug)]
pub enum WalkMode<'a> {
    /// Every entry, nothing recorded: a commit without a pause, or one
    /// whose whole read is paused.
    Whole,
    /// Every entry, while the desktop runs, each noted in the record (see
    /// `record`); a directory moved away under the walk is left for the
    /// paused pass instead of failing the commit.
    Bulk(&'a mut Record),
    /// While paused: only what differs from the record, and whiteouts for
    /// what the bulk pass wrote that is gone.
    Delta(&'a mut Record),
    /// A preview: every entry goes to the sink without data, no file is
    /// opened but for the scan's head, and what the excludes keep out is
    /// walked too (for the sink's tally of each pattern). Stops when the
    /// flag is set (whoever asked went away).
    Preview(&'a AtomicBool),
}

/// Walks the upper directory and writes all of the layer's entries, in
/// path order: one pass (see `write_changes_with`).
pub fn write_changes<S: EntrySink>(
    upper: &OverlayUpper,
    excludes: &Excludes,
    scanner: &mut Scanner,
    out: &mut S,
) -> Result<WalkStats, LayerError> {
    write_changes_with(upper, excludes, WalkMode::Whole, scanner, out)
}

/// Walks the upper directory and writes the layer's entries, in path order.
///
/// Every entry is read through descriptors (see `pinned`): a name that
/// changes while we walk is recorded as what it was when pinned, never
/// followed. The walk is iterative, so depth costs memory for names only.
/// `scanner` is told about every file, link and directory written, and
/// sees each regular file's head as it goes into `out`.
pub fn write_changes_with<S: EntrySink>(
    upper: &OverlayUpper,
    excludes: &Excludes,
    mode: WalkMode<'_>,
    scanner: &mut Scanner,
    out: &mut S,
) -> Result<WalkStats, LayerError> {
    let read_error = |source| LayerError::Read {
        path: upper.path.clone(),
        source,
    };
    let root = Pinned::open_root(&upper.path).map_err(read_error)?;
    let root_dir = root.open_directory().map_err(read_error)?;
    if matches!(mode, WalkMode::Bulk(_)) {
        // Cleans every dirty page of the file system, so that a store
        // through a shared mapping after this moves its file's ctime (see
        // `record`). Costs the write-back of what is dirty, while running.
        rustix::fs::syncfs(&root_dir).map_err(|e| read_error(e.into()))?;
    }
    let mut walker = Walker {
        upper,
        excludes,
        out,
        scanner,
        mode,
        hardlinks: HashMap::new(),
        stats: WalkStats::default(),
        stack: Vec::new(),
        open: 0,
        shallowest_open: 1,
    };
    walker.push_directory(
        Vec::new(),
        Vec::new(),
        root.identity(),
        root_dir,
        false,
        None,
    )?;
    walker.run()?;
    if let WalkMode::Delta(record) = &mut walker.mode {
        for gone in record.deleted() {
            let name_at = gone.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
            let mut whiteout = gone[..name_at].to_vec();
            whiteout.extend_from_slice(b".wh.");
            whiteout.extend_from_slice(&gone[name_at..]);
            walker.append(&Entry::empty(whiteout, EntryKind::File), None, &gone)?;
            walker.stats.whiteouts += 1;
        }
    }
    Ok(walker.stats)
}

/// A directory being walked.
struct Frame {
    /// Its name in the parent (empty for the root).
    name: Vec<u8>,
    /// Path relative to the upper directory.
    relative: Vec<u8>,
    identity: (u64, u64),
    /// Open while it is among the deepest `OPEN_DIRECTORIES`.
    fd: Option<OwnedFd>,
    /// Names still to visit, last first.
    pending: Vec<Vec<u8>>,
    /// Delta pass: this directory is written with an opaque marker, so
    /// everything below it is written too, changed or not.
    whole: bool,
    /// Preview: the exclude pattern that keeps this directory (and all
    /// below it) out of the layer.
    excluded_by: Option<usize>,
}

struct Walker<'a, 'm, S: EntrySink> {
    upper: &'a OverlayUpper,
    excludes: &'a Excludes,
    out: &'a mut S,
    scanner: &'a mut Scanner,
    mode: WalkMode<'m>,
    /// First path written for each (device, inode) with several links.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    stats: WalkStats,
    stack: Vec<Frame>,
    /// Frames whose `fd` is open.
    open: usize,
    /// No frame below this index (but the root) has an open `fd`: where
    /// closing the shallowest starts looking.
    shallowest_open: usize,
}

impl<S: EntrySink> Walker<'_, '_, S> {
    fn run(&mut self) -> Result<(), LayerError> {
        loop {
            if let WalkMode::Preview(stop) = &self.mode
                && stop.load(Ordering::Relaxed)
            {
                return Err(LayerError::Abandoned);
            }
            let Some(top) = self.stack.last_mut() else {
                break;
            };
            let Some(name) = top.pending.pop() else {
                if self.stack.pop().is_some_and(|f| f.fd.is_some()) {
                    self.open -= 1;
                }
                self.shallowest_open = self.shallowest_open.min(self.stack.len());
                continue;
            };
            let last = top.pending.is_empty();
            let depth = self.stack.len() - 1;
            if let Err(e) = self.ensure_open(depth) {
                match (&self.mode, self.moved_at(depth)) {
                    // Moved while the desktop runs: the paused pass finds
                    // it where it is now (a preview leaves it out).
                    (WalkMode::Bulk(_) | WalkMode::Preview(_), Some(at)) => {
                        self.drop_frames(at);
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            let frame = &self.stack[depth];
            let mut relative = frame.relative.clone();
            if !relative.is_empty() {
                relative.push(b'/');
            }
            relative.extend_from_slice(&name);
            self.visit(depth, relative, name)?;
            // A directory with nothing left to visit needs no descriptor
            // (but the root stays open: re-opening starts there).
            if last
                && depth > 0
                && let Some(fd) = self.stack[depth].fd.take()
            {
                drop(fd);
                self.open -= 1;
            }
        }
        Ok(())
    }

    /// After `ensure_open(depth)` failed: the frame it could not re-open,
    /// the shallowest of the closed frames right above `depth`.
    fn moved_at(&self, depth: usize) -> Option<usize> {
        (1..=depth)
            .rev()
            .take_while(|&i| self.stack[i].fd.is_none())
            .last()
    }

    /// Forgets frames `at` and deeper, with their names still to visit.
    fn drop_frames(&mut self, at: usize) {
        for frame in self.stack.drain(at..) {
            if frame.fd.is_some() {
                self.open -= 1;
            }
        }
        self.shallowest_open = self.shallowest_open.min(self.stack.len());
    }

    fn dir_fd(&self, depth: usize) -> BorrowedFd<'_> {
        self.stack[depth]
            .fd
            .as_ref()
            .map(|fd| fd.as_fd())
            .expect("ensure_open ran first")
    }

    /// Re-opens frame `depth` (and the closed frames above it) from the
    /// nearest open ancestor, each checked to still be the same directory.
    fn ensure_open(&mut self, depth: usize) -> Result<(), LayerError> {
        if self.stack[depth].fd.is_some() {
            return Ok(());
        }
        let Some(start) = (0..depth).rev().find(|&i| self.stack[i].fd.is_some()) else {
            return Err(self.moved(depth));
        };
        self.shallowest_open = self.shallowest_open.min(start.max(1));
        for i in start + 1..=depth {
            let name = cstring(&self.stack[i].name);
            let parent = self.dir_fd(i - 1);
            let reopened = reopen_directory(parent, &name, self.stack[i].identity)
                .map_err(|e| self.read_error(&self.stack[i].relative, e))?;
            let Some(fd) = reopened else {
                return Err(self.moved(i));
            };
            self.stack[i].fd = Some(fd);
            self.open += 1;
            // The way down holds only what the window keeps (never the root).
            let above = i - 1;
            if above > 0 && above + OPEN_DIRECTORIES <= depth {
                self.stack[above].fd = None;
                self.open -= 1;
            }
        }
        self.close_shallowest(depth);
        Ok(())
    }

    /// Keeps the number of open descriptors bounded: closes the shallowest
    /// open frames (never the root, which is where re-opening starts).
    fn close_shallowest(&mut self, keep_from: usize) {
        let mut i = self.shallowest_open.max(1);
        while self.open > OPEN_DIRECTORIES && i < keep_from {
            if self.stack[i].fd.take().is_some() {
                self.open -= 1;
            }
            i += 1;
        }
        self.shallowest_open = i;
    }

    fn push_directory(
        &mut self,
        name: Vec<u8>,
        relative: Vec<u8>,
        identity: (u64, u64),
        fd: OwnedFd,
        whole: bool,
        excluded_by: Option<usize>,
    ) -> Result<(), LayerError> {
        let mut pending = list_names(fd.as_fd()).map_err(|e| self.read_error(&relative, e))?;
        pending.reverse();
        self.stack.push(Frame {
            name,
            relative,
            identity,
            fd: Some(fd),
            pending,
            whole,
            excluded_by,
        });
        self.open += 1;
        let deepest = self.stack.len() - 1;
        self.close_shallowest(deepest);
        Ok(())
    }

    fn visit(&mut self, depth: usize, relative: Vec<u8>, name: Vec<u8>) -> Result<(), LayerError> {
        if let Some(pattern) = self.stack[depth].excluded_by {
            return self.visit_excluded(depth, relative, name, pattern, false);
        }
        if self.excludes.is_excluded(&relative) {
            self.stats.excluded += 1;
            if let WalkMode::Preview(_) = self.mode {
                let pattern = self.excludes.matching_pattern(&relative).unwrap_or(0);
                return self.visit_excluded(depth, relative, name, pattern, true);
            }
            return Ok(());
        }
        let c_name = cstring(&name);
        let pinned = match Pinned::open(self.dir_fd(depth), &c_name) {
            Ok(Some(p)) => p,
            // Deleted since the directory was listed (container not paused).
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.read_error(&relative, e)),
        };
        let file_type = pinned.file_type();
        let rdev = pinned.stat.st_rdev;
        let whole = self.stack[depth].whole;

        // Whiteouts first: on some kernels all whiteouts share one inode, so
        // they must never reach the hardlink bookkeeping.
        if file_type == FileType::CharacterDevice && rdev == 0 {
            match &mut self.mode {
                WalkMode::Whole | WalkMode::Preview(_) => {}
                WalkMode::Bulk(record) => record.note_whiteout(&relative),
                WalkMode::Delta(record) => {
                    if record.compare_whiteout(&relative) == Compared::Same && !whole {
                        return Ok(());
                    }
                }
            }
            let mut whiteout = relative[..relative.len() - name.len()].to_vec();
            whiteout.extend_from_slice(b".wh.");
            whiteout.extend_from_slice(&name);
            self.append(&Entry::empty(whiteout, EntryKind::File), None, &relative)?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if file_type == FileType::Socket {
            self.stats.sockets_skipped += 1;
            return Ok(());
        }

        // The paused pass skips what the bulk pass wrote as it is now, but
        // still looks inside unchanged directories. (Compared even below an
        // opaque marker, where all is written: it marks the entry as found,
        // so it gets no whiteout.)
        if let WalkMode::Delta(record) = &mut self.mode
            && record.compare(&relative, &pinned.stat) == Compared::Same
            && !whole
        {
            if file_type != FileType::Directory {
                return Ok(());
            }
            record.directory_now(&relative, false);
            let fd = pinned
                .open_directory()
                .map_err(|e| self.read_error(&relative, e))?;
            return self.push_directory(name, relative, pinned.identity(), fd, false, None);
        }

        let (xattrs, overlay) = if file_type == FileType::Symlink {
            let path = entry_proc_path(self.dir_fd(depth), &c_name);
            self.xattrs(XattrTarget::NoFollow(&path), &relative)?
        } else {
            let path = PathBuf::from(pinned.proc_path());
            self.xattrs(XattrTarget::Follow(&path), &relative)?
        };
        if overlay.redirect || overlay.metacopy {
            return Err(LayerError::OverlayFeature {
                path: self.full_path(&relative),
                feature: if overlay.redirect {
                    "redirect_dir"
                } else {
                    "metacopy"
                },
            });
        }
        let mut entry = entry_from_stat(relative.clone(), &pinned.stat, xattrs);

        match file_type {
            FileType::Directory => {
                entry.kind = EntryKind::Directory;
                self.append(&entry, None, &relative)?;
                self.scanner.directory(&relative);
                // In the delta, a marker the bulk layer already has for this
                // same directory would hide the bulk layer's own entries.
                let marker = overlay.opaque
                    && match &self.mode {
                        WalkMode::Delta(record) => {
                            whole || !record.was_opaque(&relative, &pinned.stat)
                        }
                        _ => true,
                    };
                if marker {
                    let mut marker = relative.clone();
                    marker.extend_from_slice(b"/.wh..wh..opq");
                    self.append(&Entry::empty(marker, EntryKind::File), None, &relative)?;
                    self.stats.opaque_directories += 1;
                }
                let below_whole = match &mut self.mode {
                    WalkMode::Whole | WalkMode::Preview(_) => false,
                    WalkMode::Bulk(record) => {
                        record.note(&relative, &pinned.stat, None, overlay.opaque);
                        false
                    }
                    WalkMode::Delta(record) => {
                        record.directory_now(&relative, marker);
                        whole || marker
                    }
                };
                let fd = pinned
                    .open_directory()
                    .map_err(|e| self.read_error(&relative, e))?;
                let identity = pinned.identity();
                return self.push_directory(name, relative, identity, fd, below_whole, None);
            }
            FileType::Symlink => {
                entry.kind = EntryKind::Symlink;
                entry.link = pinned
                    .link_target()
                    .map_err(|e| self.read_error(&relative, e))?;
                self.note(&relative, &pinned.stat);
                return self.append(&entry, None, &relative);
            }
            FileType::Fifo => {
                entry.kind = EntryKind::Fifo;
                self.note(&relative, &pinned.stat);
                return self.append(&entry, None, &relative);
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                entry.kind = if file_type == FileType::CharacterDevice {
                    EntryKind::CharDevice
                } else {
                    EntryKind::BlockDevice
                };
                entry.device_major = rustix::fs::major(rdev);
                entry.device_minor = rustix::fs::minor(rdev);
                self.note(&relative, &pinned.stat);
                return self.append(&entry, None, &relative);
            }
            FileType::RegularFile => {}
            // Nothing else can be stored in a layer.
            _ => return Ok(()),
        }

        // A regular file, or a further name of one already written.
        let key = pinned.identity();
        if pinned.stat.st_nlink > 1 {
            if let Some(first) = self.hardlinks.get(&key) {
                entry.kind = EntryKind::HardLink;
                entry.link = first.clone();
                entry.size = 0;
                self.stats.hardlinks += 1;
                // Recorded as the first name was: its data is this name's.
                if let WalkMode::Bulk(record) = &mut self.mode {
                    record.note_link(&relative, first);
                }
                self.scanner.hard_link(&relative);
                return self.append(&entry, None, &relative);
            }
            self.hardlinks.insert(key, relative.clone());
        }
        entry.kind = EntryKind::File;
        let head = self.scanner.file(&relative, entry.size);
        if let WalkMode::Preview(_) = self.mode {
            // Nothing is read but what the scan needs.
            if let Some(mut head) = head {
                let mut file = pinned
                    .open_file()
                    .map_err(|e| self.read_error(&relative, e))?;
                head.fill_from(&mut file)
                    .map_err(|e| self.read_error(&relative, e))?;
                self.scanner.end_file(head);
            }
            self.stats.files += 1;
            self.stats.file_bytes += entry.size;
            return self.append(&entry, None, &relative);
        }
        let mut file = pinned
            .open_file()
            .map_err(|e| self.read_error(&relative, e))?;
        self.stats.files += 1;
        self.stats.file_bytes += entry.size;
        if !matches!(self.mode, WalkMode::Bulk(_)) {
            return self.append_scanned(&entry, &mut file, head, &relative);
        }
        // Waits for a write(2) in progress on the file (ext4 takes the inode
        // lock for SEEK_DATA), so none spans our read unseen (see `record`).
        // ENXIO: no data at all. SEEK_DATA moves the offset past a leading
        // hole: back to the start.
        let _ = rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(0));
        rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0))
            .map_err(|e| self.read_error(&relative, e.into()))?;
        self.append_scanned(&entry, &mut file, head, &relative)?;
        let after = rustix::fs::fstat(&file).map_err(|e| self.read_error(&relative, e.into()))?;
        if let WalkMode::Bulk(record) = &mut self.mode {
            record.note(&relative, &pinned.stat, Some(&after), false);
        }
        Ok(())
    }

    /// Bulk pass: notes an entry without data.
    fn note(&mut self, relative: &[u8], stat: &Stat) {
        if let WalkMode::Bulk(record) = &mut self.mode {
            record.note(relative, stat, None, false);
        }
    }

    fn append(
        &mut self,
        entry: &Entry,
        data: Option<&mut dyn io::Read>,
        relative: &[u8],
    ) -> Result<(), LayerError> {
        let path = self.full_path(relative);
        self.out
            .append(entry, data)
            .map_err(|e| LayerError::from_append(e, &path))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// Appends a regular file; its head goes to the scan on the way.
    fn append_scanned(
        &mut self,
        entry: &Entry,
        file: &mut std::fs::File,
        head: Option<crate::scan::Head>,
        relative: &[u8],
    ) -> Result<(), LayerError> {
        let Some(mut head) = head else {
            return self.append(entry, Some(file), relative);
        };
        self.append(entry, Some(&mut head.reader(file)), relative)?;
        self.scanner.end_file(head);
        Ok(())
    }

    /// Preview: an entry that an exclude pattern keeps out. Pinned like any
    /// other (never followed), credited to the pattern, and a directory is
    /// walked for what it holds; nothing is read.
    fn visit_excluded(
        &mut self,
        depth: usize,
        relative: Vec<u8>,
        name: Vec<u8>,
        pattern: usize,
        matched: bool,
    ) -> Result<(), LayerError> {
        let pinned = match Pinned::open(self.dir_fd(depth), &cstring(&name)) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.read_error(&relative, e)),
        };
        let mut entry = entry_from_stat(relative.clone(), &pinned.stat, Vec::new());
        let file_type = pinned.file_type();
        entry.kind = match file_type {
            FileType::Directory => EntryKind::Directory,
            FileType::RegularFile => EntryKind::File,
            FileType::Symlink => EntryKind::Symlink,
            FileType::Fifo => EntryKind::Fifo,
            FileType::BlockDevice => EntryKind::BlockDevice,
            _ => EntryKind::CharDevice,
        };
        self.out.excluded(pattern, &entry, matched);
        if file_type != FileType::Directory {
            return Ok(());
        }
        let fd = pinned
            .open_directory()
            .map_err(|e| self.read_error(&relative, e))?;
        let identity = pinned.identity();
        self.push_directory(name, relative, identity, fd, false, Some(pattern))
    }

    /// The entry's own extended attributes, and overlay's markers taken out.
    fn xattrs(
        &self,
        target: XattrTarget<'_>,
        relative: &[u8],
    ) -> Result<(Xattrs, OverlayMarkers), LayerError> {
        let all = read_xattrs(target).map_err(|e| self.read_error(relative, e))?;
        let mut markers = OverlayMarkers::default();
        let mut kept = Vec::new();
        for (name, value) in all {
            match name.strip_prefix(self.upper.xattr_prefix) {
                Some("opaque") => markers.opaque = value == b"y",
                Some("redirect") => markers.redirect = true,
                Some("metacopy") => markers.metacopy = true,
                // origin, impure, nlink, ...: overlay's bookkeeping.
                Some(_) => {}
                None => kept.push((name, value)),
            }
        }
        Ok((kept, markers))
    }

    /// For messages only: where the entry is on the host.
    fn full_path(&self, relative: &[u8]) -> PathBuf {
        self.upper.path.join(OsStr::from_bytes(relative))
    }

    fn read_error(&self, relative: &[u8], source: io::Error) -> LayerError {
        LayerError::Read {
            path: self.full_path(relative),
            source,
        }
    }

    /// A directory was renamed or replaced while we walked below it.
    fn moved(&self, depth: usize) -> LayerError {
        self.read_error(
            &self.stack[depth].relative,
            io::Error::other(
                "the directory was moved while it was read; pause the desktop or commit again",
            ),
        )
    }
}

/// A name from `getdents`: never contains NUL.
fn cstring(name: &[u8]) -> CString {
    CString::new(name.to_vec()).unwrap_or_default()
}

#[derive(Debug, Default)]
struct OverlayMarkers {
    opaque: bool,
    redirect: bool,
    metacopy: bool,
}

fn entry_from_stat(path: Vec<u8>, stat: &Stat, xattrs: Xattrs) -> Entry {
    let is_file = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile;
    Entry {
        path,
        kind: EntryKind::File,
        mode: stat.st_mode & 0o7777,
        uid: u64::from(stat.st_uid),
        gid: u64::from(stat.st_gid),
        size: if is_file { stat.st_size as u64 } else { 0 },
        mtime: stat.st_mtime,
        link: Vec::new(),
        device_major: 0,
        device_minor: 0,
        xattrs,
    }
}
