//! Re-writing a layer tar produced elsewhere (containerd's Diff service)
//! without the excluded paths, so both paths honour the same exclusions.
//!
//! One subtlety: a kept hardlink may point at an excluded file. The layer
//! would then hold a link to nothing and fail to unpack. A first pass
//! (`plan_hardlinks`) finds such links; the second writes the excluded
//! file's data under the first kept name instead, and points the other
//! kept links at that name.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use super::LayerError;
use super::archive::{AppendError, Entry, EntryKind, TarWriter};
use super::exclude::Excludes;
use super::layer_dirs::LayerDirs;
use super::overlay::WalkStats;
use crate::scan::Scanner;

/// Excluded files that kept hardlinks point at, each with the first kept
/// name that takes its place.
pub type Promotions = HashMap<Vec<u8>, Vec<u8>>;

/// First pass: which excluded files must be kept under another name.
pub fn plan_hardlinks(
    reader: Box<dyn Read + Send>,
    excludes: &Excludes,
) -> Result<Promotions, LayerError> {
    let mut archive = tar::Archive::new(reader);
    let mut excluded_files: HashSet<Vec<u8>> = HashSet::new();
    let mut promotions = Promotions::new();
    for item in archive.entries().map_err(LayerError::DiffStream)? {
        let mut item = item.map_err(LayerError::DiffStream)?;
        let Some(entry) = convert(&mut item).map_err(LayerError::DiffStream)? else {
            continue;
        };
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
    Ok(promotions)
}

/// Second pass: writes the kept entries. Each regular file's data goes
/// through the secret scan on its way (its head), links and directories
/// are shown to it too: the same scan as the overlay walk's.
pub fn copy_filtered<W: Write>(
    reader: Box<dyn Read + Send>,
    excludes: &Excludes,
    promotions: &Promotions,
    dirs: Option<&LayerDirs>,
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
        if let Some(dirs) = dirs
            && entry.kind != EntryKind::HardLink
            && !is_whiteout(&entry.path)
            && let Some(xattrs) = dirs.xattrs(&entry.path).map_err(LayerError::DiffStream)?
        {
            entry.xattrs = xattrs;
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
