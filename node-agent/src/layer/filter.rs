//! Re-writing a layer tar produced elsewhere (containerd's Diff service)
//! without the excluded paths, so both paths honour the same exclusions.
//!
//! One subtlety: a kept hardlink may point at an excluded file. The layer
//! would then hold a link to nothing and fail to unpack. A first pass
//! (`plan`) finds such links; the second writes the excluded file's data
//! under the first kept name instead, and points the other kept links at
//! that name.
//!
//! containerd 1.6 writes only `security.capability` into its tar; the other
//! extended attributes come from the snapshot's directories (`layer_dirs`).
//! The first pass reads them while the desktop is still paused and keeps
//! the ones the tar lacks, so that the second pass (compression, the long
//! part) can run after the desktop resumes. Past `XATTR_CAPTURE_BYTES` of
//! them (a speaker can set attributes on a million files) the first pass
//! gives up keeping them, and the second reads them from the directories,
//! with the desktop still paused.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use super::LayerError;
use super::archive::{AppendError, Entry, EntryKind, TarWriter, Xattrs};
use super::exclude::Excludes;
use super::layer_dirs::LayerDirs;
use super::overlay::WalkStats;
use crate::scan::Scanner;

/// Excluded files that kept hardlinks point at, each with the first kept
/// name that takes its place.
pub type Promotions = HashMap<Vec<u8>, Vec<u8>>;

/// The most extended-attribute bytes (names, values and paths) the first
/// pass keeps for the second.
pub const XATTR_CAPTURE_BYTES: usize = 32 << 20;

/// Bytes counted for each kept entry and each kept attribute beyond
/// their names and values: the map's slot, the vectors, the allocator.
const CAPTURED_ENTRY_OVERHEAD: usize = 128;
const CAPTURED_XATTR_OVERHEAD: usize = 64;

/// Where the second pass takes each entry's extended attributes from.
#[derive(Debug)]
pub enum TarXattrs {
    /// As the tar has them.
    AsWritten,
    /// Kept by the first pass: the entries whose attributes differ from
    /// the tar's.
    Captured(HashMap<Vec<u8>, Xattrs>),
    /// Read from the snapshot's directories as the entries go by (the
    /// desktop must still be paused).
    Live(LayerDirs),
}

/// What the first pass found.
#[derive(Debug, Default)]
pub struct Plan {
    pub promotions: Promotions,
    /// The attributes the tar lacks; `None` without directories to read
    /// them from, or when they were too many to keep.
    pub xattrs: Option<HashMap<Vec<u8>, Xattrs>>,
}

/// First pass: which excluded files must be kept under another name, and
/// (given the snapshot's directories) the attributes the tar lacks, up to
/// `capture_bytes` of them.
pub fn plan(
    reader: Box<dyn Read + Send>,
    excludes: &Excludes,
    dirs: Option<&LayerDirs>,
    capture_bytes: usize,
) -> Result<Plan, LayerError> {
    let mut archive = tar::Archive::new(reader);
    let mut excluded_files: HashSet<Vec<u8>> = HashSet::new();
    let mut promotions = Promotions::new();
    let mut captured = dirs.map(|_| HashMap::new());
    let mut captured_bytes = 0;
    for item in archive.entries().map_err(LayerError::DiffStream)? {
        let mut item = item.map_err(LayerError::DiffStream)?;
        let Some(entry) = convert(&mut item).map_err(LayerError::DiffStream)? else {
            continue;
        };
        if let (Some(dirs), Some(map)) = (dirs, captured.as_mut())
            && let Some(xattrs) = own_xattrs(dirs, &entry)?
            && xattrs != entry.xattrs
        {
            // What the map really holds: the bytes and each allocation's
            // bookkeeping (a speaker may set one byte on a million files).
            captured_bytes += CAPTURED_ENTRY_OVERHEAD
                + entry.path.len()
                + xattrs
                    .iter()
                    .map(|(n, v)| CAPTURED_XATTR_OVERHEAD + n.len() + v.len())
                    .sum::<usize>();
            if captured_bytes > capture_bytes {
                tracing::info!(
                    "too many extended attributes to keep; reading them again while paused"
                );
                captured = None;
            } else {
                map.insert(entry.path.clone(), xattrs);
            }
        }
        let excluded = excludes.is_excluded_or_below(&entry.path);
        match entry.kind {
            EntryKind::File if excluded => {
                excluded_files.insert(entry.path);
            }
            EntryKind::HardLink if !excluded && excluded_files.contains(&entry.link) => {
                promotions.entry(entry.link).or_insert(entry.path);
            }
            _ => {}
        }
    }
    Ok(Plan {
        promotions,
        xattrs: captured,
    })
}

/// The entry's attributes as its snapshot directory has them; `None` for
/// links and whiteouts (which carry none of their own) and entries no
/// directory has.
fn own_xattrs(dirs: &LayerDirs, entry: &Entry) -> Result<Option<Xattrs>, LayerError> {
    if entry.kind == EntryKind::HardLink || is_whiteout(&entry.path) {
        return Ok(None);
    }
    dirs.xattrs(&entry.path).map_err(LayerError::DiffStream)
}

/// Second pass: writes the kept entries. Each regular file's data goes
/// through the secret scan on its way (its head), links and directories
/// are shown to it too: the same scan as the overlay walk's.
pub fn copy_filtered<W: Write>(
    reader: Box<dyn Read + Send>,
    excludes: &Excludes,
    promotions: &Promotions,
    xattrs: &TarXattrs,
    scanner: &mut Scanner,
    tar: &mut TarWriter<W>,
) -> Result<WalkStats, LayerError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = WalkStats::default();
    let entries = archive.entries().map_err(LayerError::DiffStream)?;
    for item in entries {
        let mut item = item.map_err(LayerError::DiffStream)?;
        let entry = convert(&mut item).map_err(LayerError::DiffStream)?;
        let Some(mut entry) = entry else {
            continue;
        };
        // The attributes the Diff service left out, from the file itself.
        match xattrs {
            TarXattrs::AsWritten => {}
            TarXattrs::Captured(map) => {
                if let Some(own) = map.get(&entry.path) {
                    entry.xattrs = own.clone();
                }
            }
            TarXattrs::Live(dirs) => {
                if let Some(own) = own_xattrs(dirs, &entry)? {
                    entry.xattrs = own;
                }
            }
        }
        if entry.kind == EntryKind::HardLink
            && let Some(promoted) = promotions.get(&entry.link)
        {
            if *promoted == entry.path {
                // Already written, as the file itself.
                continue;
            }
            entry.link = promoted.clone();
        }
        if entry.kind == EntryKind::File
            && let Some(promoted) = promotions.get(&entry.path)
        {
            stats.excluded += 1;
            entry.path = promoted.clone();
            stats.files += 1;
            stats.file_bytes += entry.size;
            append_file(tar, scanner, &entry, &mut item)?;
            stats.entries += 1;
            continue;
        }
        let name = entry.path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        // A whiteout is excluded when the path it deletes is.
        let subject = match name.strip_prefix(b".wh.") {
            Some(deleted) if name != b".wh..wh..opq" => {
                let mut p = entry.path[..entry.path.len() - name.len()].to_vec();
                p.extend_from_slice(deleted);
                p
            }
            _ => entry.path.clone(),
        };
        if excludes.is_excluded_or_below(&subject) {
            stats.excluded += 1;
            continue;
        }
        if name.starts_with(b".wh.") {
            if name == b".wh..wh..opq" {
                stats.opaque_directories += 1;
            } else {
                stats.whiteouts += 1;
            }
        } else if entry.kind == EntryKind::File {
            stats.files += 1;
            stats.file_bytes += entry.size;
        } else if entry.kind == EntryKind::HardLink {
            stats.hardlinks += 1;
        }
        let whiteout = name.starts_with(b".wh.");
        match entry.kind {
            EntryKind::File if !whiteout => append_file(tar, scanner, &entry, &mut item)?,
            kind => {
                match kind {
                    EntryKind::HardLink => scanner.hard_link(&entry.path),
                    EntryKind::Directory => scanner.directory(&entry.path),
                    _ => {}
                }
                let data: Option<&mut dyn Read> = if kind == EntryKind::File {
                    Some(&mut item)
                } else {
                    None
                };
                tar.append(&entry, data).map_err(append_error)?;
            }
        }
        stats.entries += 1;
    }
    Ok(stats)
}

fn is_whiteout(path: &[u8]) -> bool {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
    name.starts_with(b".wh.")
}

/// A regular file: its head goes to the scan as the data goes by.
fn append_file<W: Write>(
    tar: &mut TarWriter<W>,
    scanner: &mut Scanner,
    entry: &Entry,
    data: &mut dyn Read,
) -> Result<(), LayerError> {
    match scanner.file(&entry.path, entry.size) {
        Some(mut head) => {
            tar.append(entry, Some(&mut head.reader(data)))
                .map_err(append_error)?;
            scanner.end_file(head);
        }
        None => tar.append(entry, Some(data)).map_err(append_error)?,
    }
    Ok(())
}

fn append_error(error: AppendError) -> LayerError {
    match error {
        AppendError::Read(e) => LayerError::DiffStream(e),
        AppendError::Write(e) => LayerError::Write(e),
    }
}

/// Our form of a tar entry; `None` for entries a layer does not carry.
fn convert<R: Read>(item: &mut tar::Entry<'_, R>) -> io::Result<Option<Entry>> {
    let header = item.header();
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
        tar::EntryType::Link => EntryKind::HardLink,
        tar::EntryType::Symlink => EntryKind::Symlink,
        tar::EntryType::Char => EntryKind::CharDevice,
        tar::EntryType::Block => EntryKind::BlockDevice,
        tar::EntryType::Directory => EntryKind::Directory,
        tar::EntryType::Fifo => EntryKind::Fifo,
        _ => return Ok(None),
    };
    let mut path = item.path_bytes().to_vec();
    while path.ends_with(b"/") {
        path.pop();
    }
    while path.starts_with(b"./") {
        path.drain(..2);
    }
    if path.is_empty() || path == b"." {
        return Ok(None);
    }
    let mut xattrs = Vec::new();
    if let Some(extensions) = item.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            if let Ok(key) = extension.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
            }
        }
    }
    xattrs.sort();
    let header = item.header();
    Ok(Some(Entry {
        path,
        kind,
        mode: header.mode()? & 0o7777,
        uid: header.uid()?,
        gid: header.gid()?,
        size: if kind == EntryKind::File {
            item.size()
        } else {
            0
        },
        mtime: header.mtime()? as i64,
        link: item
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default(),
        device_major: header.device_major()?.unwrap_or(0),
        device_minor: header.device_minor()?.unwrap_or(0),
        xattrs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with a directory, a file and a whiteout, as containerd writes
    /// them (no `user.*` attributes).
    fn diff_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind) in [
            ("data", tar::EntryType::Directory),
            ("data/tagged", tar::EntryType::Regular),
            ("data/.wh.gone", tar::EntryType::Regular),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_device_major(0).unwrap();
            header.set_device_minor(0).unwrap();
            header.set_size(0);
            builder.append_data(&mut header, path, &[][..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn the_first_pass_keeps_the_attributes_the_tar_lacks_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/tagged"), "").unwrap();
        rustix::fs::lsetxattr(
            dir.path().join("data/tagged"),
            "user.origin",
            b"speaker",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("the test directory keeps user xattrs");
        let options = vec!["rbind".to_string()];
        let dirs = LayerDirs::from_mount("bind", &dir.path().to_string_lossy(), &options).unwrap();
        let excludes = Excludes::new(&[], false).unwrap();

        let plan = plan(
            Box::new(std::io::Cursor::new(diff_tar())),
            &excludes,
            Some(&dirs),
            4096,
        )
        .unwrap();
        let captured = plan.xattrs.expect("kept");
        assert_eq!(
            captured.get(&b"data/tagged"[..]),
            Some(&vec![("user.origin".to_string(), b"speaker".to_vec())])
        );
        // Entries whose attributes the tar already has are not kept.
        assert_eq!(captured.len(), 1, "{captured:?}");

        // Over the budget: nothing kept, the second pass reads them live.
        let over = super::plan(
            Box::new(std::io::Cursor::new(diff_tar())),
            &excludes,
            Some(&dirs),
            8,
        )
        .unwrap();
        assert!(over.xattrs.is_none());
        // Without directories there is nothing to keep.
        let none = super::plan(
            Box::new(std::io::Cursor::new(diff_tar())),
            &excludes,
            None,
            4096,
        )
        .unwrap();
        assert!(none.xattrs.is_none());
    }
}
