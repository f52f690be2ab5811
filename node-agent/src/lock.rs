//! One commit per container at a time, across processes: an exclusive
//! `flock` on a file named after the container (its containerd namespace
//! and id: the same id in two namespaces is two containers). The kernel drops the lock
//! when the holder exits, so a crash never leaves a container locked.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "a commit of container \"{container}\" is already running{holder}; try again when it has finished"
    )]
    Busy { container: String, holder: String },

    #[error("cannot use the lock directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for the duration of a commit.
#[derive(Debug)]
pub struct CommitLock {
    _file: File,
}

pub fn lock_container(
    state_dir: &Path,
    namespace: &str,
    container_id: &str,
) -> Result<CommitLock, LockError> {
    let dir = state_dir.join("locks");
    let io_error = |path: &Path, source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let path = dir.join(format!("{}.lock", file_name(namespace, container_id)));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    // std's file lock is `flock` on Linux: the semantics described above.
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => String::new(),
                pid => format!(" (process {pid})"),
            };
            return Err(LockError::Busy {
                container: container_id.to_string(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_error(&path, e)),
    }
    // Record the holder for the message above; failures here are harmless.
    let _ = file.set_len(0);
    let _ = file.seek(SeekFrom::Start(0));
    let _ = write!(file, "{}", std::process::id());
    Ok(CommitLock { _file: file })
}

/// The SHA-256 of namespace and id: a safe file name of fixed length for
/// any namespace and id, and two containers never share one.
fn file_name(namespace: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_container(dir.path(), "ns", "abc").unwrap();
        let error = lock_container(dir.path(), "ns", "abc")
            .unwrap_err()
            .to_string();
        assert!(error.contains("already running"), "{error}");
        assert!(error.contains(&std::process::id().to_string()), "{error}");
        assert!(lock_container(dir.path(), "ns", "other").is_ok());
        // The same id in another namespace is another container.
        assert!(lock_container(dir.path(), "other-ns", "abc").is_ok());
        // Ids that a character-by-character escape would have merged.
        let _slash = lock_container(dir.path(), "ns", "a/b").unwrap();
        assert!(lock_container(dir.path(), "ns", "a_b").is_ok());
        drop(first);
        assert!(lock_container(dir.path(), "ns", "abc").is_ok());
    }
}
