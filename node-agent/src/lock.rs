//! One commit per container at a time, across processes: an exclusive
//! `flock` on a file named after the container. The kernel drops the lock
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

pub fn lock_container(state_dir: &Path, container_id: &str) -> Result<CommitLock, LockError> {
    let dir = state_dir.join("locks");
    let io_error = |path: &Path, source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let path = dir.join(format!("{}.lock", file_name(container_id)));
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

/// Container ids are hex in practice, but any id must make a safe file name.
fn file_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_container(dir.path(), "abc").unwrap();
        let error = lock_container(dir.path(), "abc").unwrap_err().to_string();
        assert!(error.contains("already running"), "{error}");
        assert!(error.contains(&std::process::id().to_string()), "{error}");
        assert!(lock_container(dir.path(), "other").is_ok());
        drop(first);
        assert!(lock_container(dir.path(), "abc").is_ok());
    }
}
