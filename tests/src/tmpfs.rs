//! A tmpfs of a given size, for tests that need a disk that fills up or
//! whose use they watch (a spool, say).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::unique;

/// A tmpfs mounted on a new directory under the temporary directory
/// (owner only); unmounted and removed on drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB; fails the test when it cannot (the
    /// tests run as root).
    pub fn mount(mib: u64) -> Self {
        let path = std::env::temp_dir().join(unique("dcs-tmpfs"));
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {} (the tests run as root)",
            path.display()
        );
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes its files take, named or not (a file without a name, such as
    /// an `O_TMPFILE` file, is counted here but found by no directory
    /// listing).
    pub fn used_bytes(&self) -> u64 {
        let stats = rustix::fs::statvfs(&self.path).unwrap();
        (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process that still holds a file in it (an agent being
        // killed) must not leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}
