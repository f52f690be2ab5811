//! The fast path: a container's changes on the `overlayfs` snapshotter are
//! exactly the files in its overlay upper directory, so reading that one
//! directory costs what the change costs, whatever the size of the image.
//!
//! Overlay records deletions in its own way; OCI layers use another:
//! - a whiteout (character device 0:0) becomes an empty `.wh.<name>` file;
//! - an opaque directory (xattr `trusted.overlay.opaque=y`) gets a
//!   `.wh..wh..opq` entry, hiding everything the lower layers had in it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::LayerError;
use super::archive::{Entry, EntryKind, TarWriter, Xattrs};
use super::exclude::Excludes;
use super::xattr::read_xattrs;

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

/// Walks the upper directory and writes the layer's entries, in path order.
pub fn write_changes<W: Write>(
    upper: &OverlayUpper,
    excludes: &Excludes,
    tar: &mut TarWriter<W>,
) -> Result<WalkStats, LayerError> {
    let mut walker = Walker {
        upper,
        excludes,
        tar,
        hardlinks: HashMap::new(),
        stats: WalkStats::default(),
    };
    let root = fs::symlink_metadata(&upper.path).map_err(|e| LayerError::Read {
        path: upper.path.clone(),
        source: e,
    })?;
    if !root.is_dir() {
        return Err(LayerError::Read {
            path: upper.path.clone(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    walker.walk_directory(&upper.path, &[])?;
    Ok(walker.stats)
}

struct Walker<'a, W: Write> {
    upper: &'a OverlayUpper,
    excludes: &'a Excludes,
    tar: &'a mut TarWriter<W>,
    /// First path written for each (device, inode) with several links.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    stats: WalkStats,
}

impl<W: Write> Walker<'_, W> {
    fn walk_directory(&mut self, dir: &Path, relative: &[u8]) -> Result<(), LayerError> {
        let read_error = |e| LayerError::Read {
            path: dir.to_path_buf(),
            source: e,
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for item in fs::read_dir(dir).map_err(read_error)? {
            let item = item.map_err(read_error)?;
            names.push(item.file_name().as_bytes().to_vec());
        }
        names.sort();
        for name in names {
            let path = dir.join(OsStr::from_bytes(&name));
            let mut child = relative.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            self.visit(&path, child, &name)?;
        }
        Ok(())
    }

    fn visit(&mut self, path: &Path, relative: Vec<u8>, name: &[u8]) -> Result<(), LayerError> {
        let metadata = match fs::symlink_metadata(path) {
            Ok(m) => m,
            // Deleted since the directory was listed (container not paused).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(LayerError::Read {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        if self.excludes.is_excluded(&relative) {
            self.stats.excluded += 1;
            return Ok(());
        }
        let file_type = metadata.file_type();

        // Whiteouts first: on some kernels all whiteouts share one inode, so
        // they must never reach the hardlink bookkeeping.
        if file_type.is_char_device() && metadata.rdev() == 0 {
            let mut whiteout = relative[..relative.len() - name.len()].to_vec();
            whiteout.extend_from_slice(b".wh.");
            whiteout.extend_from_slice(name);
            self.append(&Entry::empty(whiteout, EntryKind::File), None, path)?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if file_type.is_socket() {
            self.stats.sockets_skipped += 1;
            return Ok(());
        }

        let (xattrs, overlay) = self.xattrs(path)?;
        if overlay.redirect || overlay.metacopy {
            return Err(LayerError::OverlayFeature {
                path: path.to_path_buf(),
                feature: if overlay.redirect {
                    "redirect_dir"
                } else {
                    "metacopy"
                },
            });
        }
        let mut entry = entry_from_metadata(relative.clone(), &metadata, xattrs);

        if file_type.is_dir() {
            entry.kind = EntryKind::Directory;
            self.append(&entry, None, path)?;
            if overlay.opaque {
                let mut marker = relative.clone();
                marker.extend_from_slice(b"/.wh..wh..opq");
                self.append(&Entry::empty(marker, EntryKind::File), None, path)?;
                self.stats.opaque_directories += 1;
            }
            return self.walk_directory(path, &relative);
        }
        if file_type.is_symlink() {
            entry.kind = EntryKind::Symlink;
            entry.link = fs::read_link(path)
                .map_err(|e| LayerError::Read {
                    path: path.to_path_buf(),
                    source: e,
                })?
                .into_os_string()
                .into_encoded_bytes();
            return self.append(&entry, None, path);
        }
        if file_type.is_fifo() {
            entry.kind = EntryKind::Fifo;
            return self.append(&entry, None, path);
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            entry.kind = if file_type.is_char_device() {
                EntryKind::CharDevice
            } else {
                EntryKind::BlockDevice
            };
            entry.device_major = rustix::fs::major(metadata.rdev());
            entry.device_minor = rustix::fs::minor(metadata.rdev());
            return self.append(&entry, None, path);
        }

        // A regular file, or a further name of one already written.
        if metadata.nlink() > 1 {
            let key = (metadata.dev(), metadata.ino());
            if let Some(first) = self.hardlinks.get(&key) {
                entry.kind = EntryKind::HardLink;
                entry.link = first.clone();
                entry.size = 0;
                self.stats.hardlinks += 1;
                return self.append(&entry, None, path);
            }
            self.hardlinks.insert(key, relative.clone());
        }
        entry.kind = EntryKind::File;
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(LayerError::Read {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        self.stats.files += 1;
        self.stats.file_bytes += entry.size;
        self.append(&entry, Some(&mut file), path)
    }

    fn append(
        &mut self,
        entry: &Entry,
        data: Option<&mut dyn io::Read>,
        path: &Path,
    ) -> Result<(), LayerError> {
        self.tar
            .append(entry, data)
            .map_err(|e| LayerError::from_append(e, path))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// The entry's own extended attributes, and overlay's markers taken out.
    fn xattrs(&self, path: &Path) -> Result<(Xattrs, OverlayMarkers), LayerError> {
        let all = read_xattrs(path).map_err(|e| LayerError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
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
}

#[derive(Debug, Default)]
struct OverlayMarkers {
    opaque: bool,
    redirect: bool,
    metacopy: bool,
}

fn entry_from_metadata(path: Vec<u8>, m: &Metadata, xattrs: Xattrs) -> Entry {
    Entry {
        path,
        kind: EntryKind::File,
        mode: m.mode() & 0o7777,
        uid: u64::from(m.uid()),
        gid: u64::from(m.gid()),
        size: if m.is_file() { m.len() } else { 0 },
        mtime: m.mtime(),
        link: Vec::new(),
        device_major: 0,
        device_minor: 0,
        xattrs,
    }
}
