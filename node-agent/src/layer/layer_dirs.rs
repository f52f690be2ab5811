//! The directories a container's file system is made of, top first, to
//! read the extended attributes that containerd's Diff service leaves out
//! of its tar: containerd 1.6 writes `security.capability` only, so a layer
//! from it (the fallback of a commit, and every flatten) would lose the
//! `user.*` attributes the overlay reader keeps.
//!
//! Every directory here is a snapshot directory containerd named; the
//! names inside are the speaker's. Each path is walked one component at a
//! time with `O_PATH | O_NOFOLLOW` (see `pinned`), so no symlink a speaker
//! planted can lead the lookup out of the snapshot.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::FileType;

use super::archive::Xattrs;
use super::pinned::{Pinned, entry_proc_path};
use super::xattr::{XattrTarget, read_xattrs};

/// A file system's directories, top layer first.
pub struct LayerDirs {
    roots: Vec<OwnedFd>,
    /// overlay's own attributes, never part of a layer.
    overlay_prefix: Option<&'static str>,
}

impl std::fmt::Debug for LayerDirs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerDirs")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl LayerDirs {
    /// From a snapshot's mounts: one overlay mount (upper directory, then
    /// the lower ones in overlay's order) or one bind mount (the `native`
    /// snapshotter). `None` for anything else, or when a directory cannot
    /// be opened: the layer then keeps what the tar says.
    pub fn from_mount(mount_type: &str, source: &str, options: &[String]) -> Option<Self> {
        let (paths, overlay_prefix) = if mount_type == "overlay" {
            let mut paths = Vec::new();
            if let Some(upper) = options.iter().find_map(|o| o.strip_prefix("upperdir=")) {
                paths.push(PathBuf::from(upper));
            }
            let lower = options.iter().find_map(|o| o.strip_prefix("lowerdir="))?;
            paths.extend(lower.split(':').map(PathBuf::from));
            let prefix = if options.iter().any(|o| o == "userxattr") {
                "user.overlay."
            } else {
                "trusted.overlay."
            };
            (paths, Some(prefix))
        } else if mount_type == "bind" || options.iter().any(|o| o == "bind" || o == "rbind") {
            (vec![PathBuf::from(source)], None)
        } else {
            return None;
        };
        let roots = paths
            .iter()
            .map(|p| Pinned::open_root(p).map(|pinned| pinned.into_fd()))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| tracing::warn!(error = %e, "cannot open the snapshot's directories; xattrs as the Diff service wrote them"))
            .ok()?;
        Some(Self {
            roots,
            overlay_prefix,
        })
    }

    /// The extended attributes of `path` (relative, `/`-separated) in the
    /// topmost directory that has it; `None` when none has it (or it is
    /// an overlay whiteout there).
    pub fn xattrs(&self, path: &[u8]) -> io::Result<Option<Xattrs>> {
        let mut components = Vec::new();
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            if part == b"." || part == b".." {
                return Ok(None);
            }
            match CString::new(part) {
                Ok(name) => components.push(name),
                Err(_) => return Ok(None),
            }
        }
        let Some((last, parents)) = components.split_last() else {
            return Ok(None);
        };
        'layers: for root in &self.roots {
            let mut dir: Option<OwnedFd> = None;
            for name in parents {
                let at = dir.as_ref().map_or(root.as_fd(), |d| d.as_fd());
                let Some(pinned) = Pinned::open(at, name)? else {
                    continue 'layers;
                };
                if pinned.file_type() != FileType::Directory {
                    // A file or a whiteout hides what lower layers have.
                    return Ok(None);
                }
                dir = Some(pinned.into_fd());
            }
            let at = dir.as_ref().map_or(root.as_fd(), |d| d.as_fd());
            let Some(pinned) = Pinned::open(at, last)? else {
                continue;
            };
            let kind = pinned.file_type();
            if self.overlay_prefix.is_some()
                && kind == FileType::CharacterDevice
                && pinned.stat.st_rdev == 0
            {
                return Ok(None);
            }
            let all = if kind == FileType::Symlink {
                // A symlink's own attributes: by name in its pinned parent,
                // not followed.
                let path = entry_proc_path(at, last);
                read_xattrs(XattrTarget::NoFollow(&path))?
            } else {
                let path = PathBuf::from(pinned.proc_path());
                read_xattrs(XattrTarget::Follow(&path))?
            };
            let kept = all
                .into_iter()
                .filter(|(name, _)| !self.overlay_prefix.is_some_and(|p| name.starts_with(p)))
                .collect();
            return Ok(Some(kept));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(path: &std::path::Path, name: &str, value: &[u8]) -> bool {
        rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).is_ok()
    }

    #[test]
    fn the_topmost_layer_answers_and_links_never_lead_out() {
        let top = tempfile::tempdir().unwrap();
        let lower = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("data")).unwrap();
        std::fs::write(lower.path().join("data/both"), "lower").unwrap();
        std::fs::write(lower.path().join("data/only-lower"), "lower").unwrap();
        std::fs::create_dir_all(top.path().join("data")).unwrap();
        std::fs::write(top.path().join("data/both"), "top").unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        // The speaker's trap: a directory link to a host directory.
        std::os::unix::fs::symlink(outside.path(), top.path().join("escape")).unwrap();
        let supported = set(&lower.path().join("data/both"), "user.layer", b"lower")
            && set(&top.path().join("data/both"), "user.layer", b"top")
            && set(
                &lower.path().join("data/only-lower"),
                "user.layer",
                b"lower",
            )
            && set(&outside.path().join("secret"), "user.layer", b"host");
        assert!(
            supported,
            "the test directory's file system keeps user xattrs"
        );

        let options = vec![
            format!("upperdir={}", top.path().display()),
            format!("lowerdir={}", lower.path().display()),
        ];
        let dirs = LayerDirs::from_mount("overlay", "overlay", &options).unwrap();
        let value = |path: &[u8]| {
            dirs.xattrs(path).unwrap().map(|list| {
                list.into_iter()
                    .find(|(n, _)| n == "user.layer")
                    .map(|(_, v)| v)
            })
        };
        assert_eq!(value(b"data/both"), Some(Some(b"top".to_vec())));
        assert_eq!(value(b"data/only-lower"), Some(Some(b"lower".to_vec())));
        assert_eq!(value(b"data/none"), None);
        assert_eq!(value(b"escape/secret"), None, "no symlink is followed");
        assert_eq!(value(b"data/../escape/secret"), None);
        assert_eq!(value(b""), None);
        // The link itself is found, with its own (empty) attributes.
        assert_eq!(value(b"escape"), Some(None));

        let bind = LayerDirs::from_mount("bind", &top.path().to_string_lossy(), &["rbind".into()])
            .unwrap();
        assert!(bind.xattrs(b"data/only-lower").unwrap().is_none());
        assert!(LayerDirs::from_mount("tmpfs", "x", &[]).is_none());
    }
}
