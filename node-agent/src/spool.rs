//! The agent's own copy of a new layer, kept until the image is pushed.
//!
//! A layer streams to the registry as it is built, but a push can still
//! need the bytes again: a layer built while the desktop was paused (the
//! upload may not slow the read), an upload the registry stalled, a retry.
//! Keeping them in containerd's content store costs containerd as much CPU
//! as the agent spends building the layer (it hashes every byte again and
//! takes each chunk over gRPC: perf showed 4.0 s of containerd against 4.4 s
//! of agent for a 1 GB change), which on a small node is the difference
//! between a commit that costs its compression and one that costs twice
//! that. So by default the agent keeps the layer in a file of its own:
//!
//! - an anonymous file (`O_TMPFILE`) in the spool directory: it has no
//!   name, so nothing else on the node can open it, and it is gone when the
//!   commit ends, however it ends (a crash included);
//! - written on a thread of its own, so the thread that reads the desktop
//!   and feeds the compressor never waits for the page cache;
//! - not synced: a layer pushed before the kernel writes it back never
//!   reaches the disk at all.
//!
//! The node then has no local copy of the new image; kubelet pulls it like
//! any other when a pod runs it. `--local-image` writes the layer into
//! containerd instead, and names the image there (see `commit`); the
//! registry push reads a spooled layer through `SpooledBlob::reader`.

use std::fs::File;
use std::io::Seek;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rustix::fs::{Mode, OFlags};

/// Chunks waiting for the writing thread (32 KiB each: 512 KiB).
const QUEUE: usize = 16;

/// Where a commit keeps its layers until they are pushed.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot keep the layer in the spool directory {}: {source}", dir.display())]
pub struct SpoolError {
    pub dir: PathBuf,
    pub source: io::Error,
}

impl Spool {
    /// The spool in `dir`, created (owner only) if missing. A file is made
    /// and dropped at once, so an unusable directory fails the commit
    /// before anything is paused or built.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        let spool = Self {
            dir: dir.to_path_buf(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| spool.anonymous_file())
            .map_err(|source| spool.error(source))?;
        Ok(spool)
    }

    /// A writer of a new layer file.
    pub fn writer(&self) -> Result<SpoolWriter, SpoolError> {
        let file = self.anonymous_file().map_err(|e| self.error(e))?;
        SpoolWriter::start(file, self.dir.clone()).map_err(|e| self.error(e))
    }

    fn error(&self, source: io::Error) -> SpoolError {
        SpoolError {
            dir: self.dir.clone(),
            source,
        }
    }

    /// A file without a name in the spool directory; where the file system
    /// has no `O_TMPFILE`, a new name unlinked at once.
    fn anonymous_file(&self) -> io::Result<File> {
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::open(&self.dir, flags, Mode::RUSR | Mode::WUSR) {
            Ok(fd) => Ok(File::from(fd)),
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR) => {
                let path = self.dir.join(format!("layer-{}", uuid::Uuid::new_v4()));
                let flags = OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::RDWR
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rustix::fs::open(&path, flags, Mode::RUSR | Mode::WUSR)?;
                std::fs::remove_file(&path)?;
                Ok(File::from(fd))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes a layer's chunks to its spool file on a thread of its own.
#[derive(Debug)]
pub struct SpoolWriter {
    dir: PathBuf,
    sender: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<io::Result<(File, u64)>>>,
}

impl SpoolWriter {
    fn start(file: File, dir: PathBuf) -> io::Result<Self> {
        let (sender, receiver) = sync_channel::<Vec<u8>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("dcs-spool".into())
            .spawn(move || write_chunks(file, receiver))?;
        Ok(Self {
            dir,
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Queues a chunk; fails once the writing thread has failed (its error
    /// comes from `finish`).
    pub fn write(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let sent = self.sender.as_ref().map(|s| s.send(chunk));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(io::Error::other("the spool file could not be written")),
        }
    }

    /// Waits for every chunk to be written: the file and its size, or the
    /// first error of the writing thread.
    pub fn finish(mut self) -> Result<SpooledBlob, SpoolError> {
        self.sender = None;
        let thread = self.thread.take().expect("finished once");
        let written = thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the spool writer panicked")));
        match written {
            Ok((file, size)) => Ok(SpooledBlob { file, size }),
            Err(source) => Err(SpoolError {
                dir: self.dir.clone(),
                source,
            }),
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // Ends the thread; the file goes with it.
        self.sender = None;
    }
}

fn write_chunks(mut file: File, receiver: Receiver<Vec<u8>>) -> io::Result<(File, u64)> {
    let mut size = 0u64;
    for chunk in receiver {
        file.write_all(&chunk)?;
        size += chunk.len() as u64;
    }
    Ok((file, size))
}

/// A finished layer in its spool file.
#[derive(Debug)]
pub struct SpooledBlob {
    file: File,
    size: u64,
}

impl SpooledBlob {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file, positioned at the blob's start. Its clones share that
    /// position: one reader at a time (a push reads a blob once, and again
    /// only after that read ended).
    pub fn file_from_start(&self) -> io::Result<File> {
        let mut file = self.file.try_clone()?;
        file.seek(io::SeekFrom::Start(0))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_layer_round_trips_and_leaves_no_name_behind() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let mut writer = spool.writer().unwrap();
        let mut expected = Vec::new();
        for i in 0..100u32 {
            let chunk = vec![(i % 251) as u8; 32 * 1024 + i as usize];
            expected.extend_from_slice(&chunk);
            writer.write(chunk).unwrap();
        }
        let blob = writer.finish().unwrap();
        assert_eq!(blob.size(), expected.len() as u64);
        // Read whole, and again from the start after a partial read.
        let mut head = [0u8; 10];
        blob.file_from_start()
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        let mut all = Vec::new();
        blob.file_from_start()
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, expected);
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0,
            "the spool file has no name"
        );
    }

    #[test]
    fn the_directory_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/spool");
        Spool::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn an_unusable_directory_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let error = Spool::open(&file).unwrap_err();
        assert!(error.to_string().contains("not-a-dir"), "{error}");
        // A file in the way of the path, below it.
        assert!(Spool::open(&file.join("spool")).is_err());
    }

    #[test]
    fn a_full_disk_is_an_error_not_a_short_blob() {
        // /dev/full fails every write with ENOSPC.
        let full = File::options().write(true).open("/dev/full").unwrap();
        let mut writer = SpoolWriter::start(full, PathBuf::from("/dev")).unwrap();
        for _ in 0..100 {
            if writer.write(vec![1u8; 32 * 1024]).is_err() {
                break;
            }
        }
        let error = writer.finish().unwrap_err();
        assert_eq!(error.source.raw_os_error(), Some(28), "{error}");
    }
}
