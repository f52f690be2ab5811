//! The agent's own copy of a new layer, kept until the image is pushed.
//!
//! A layer streams to the registry as it is built, but a push can still
//! need the bytes again: a layer built while the desktop was paused (the
//! upload may not slow the read), an upload the registry stalled, a layer
//! never streamed (a delta, a layer read again while paused). A failed push
//! is not retried: the commit fails.
//! Keeping them in containerd's content store costs containerd as much CPU
//! as the agent spends building the layer (it hashes every byte again and
//! takes each chunk over gRPC: perf showed 4.0 s of containerd against 4.4 s
//! of agent for a 1 GB change), which on a small node is the difference
//! between a commit that costs its compression and one that costs twice
//! that. So by default the agent keeps the layer in a file of its own:
//!
//! - an anonymous file (`O_TMPFILE`) in the spool directory: it has no
//!   name, so nothing else on the node can open it, and it is gone when the
//!   commit ends, however it ends: pushed, failed, cancelled (the build
//!   stops, see `commit::sink`), or the agent dead; a layer the image will
//!   not have goes as soon as that is known;
//! - in a directory checked once (the agent's own, no link, owner only)
//!   and then used through its handle, never by its name again;
//! - written on a thread of its own, so the thread that reads the desktop
//!   and feeds the compressor never waits for the page cache;
//! - not synced: a layer pushed before the kernel writes it back never
//!   reaches the disk at all.
//!
//! The node then has no local copy of the new image; kubelet pulls it like
//! any other when a pod runs it. `--local-image` writes the layer into
//! containerd instead, and names the image there (see `commit`); the
//! registry push reads a spooled layer through `SpooledBlob::reader`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Chunks waiting for the writing thread (32 KiB each: 512 KiB).
const QUEUE: usize = 16;

/// The name of the thread that writes a layer's spool file (a thread name
/// is at most 15 bytes).
pub const WRITER_THREAD: &str = "dcs-spool";

/// What a file made by the fallback for file systems without `O_TMPFILE`
/// is named, for the moment between its creation and its unlinking.
const FALLBACK_PREFIX: &str = "layer-";

/// Where a commit keeps its layers until they are pushed.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    /// The directory as opened and checked: every file is made relative to
    /// it, so a name swapped after the check cannot redirect the layers.
    handle: Arc<OwnedFd>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot keep the layer in the spool directory {}: {source}", dir.display())]
pub struct SpoolError {
    pub dir: PathBuf,
    pub source: io::Error,
}

impl Spool {
    /// The spool in `dir`, created (owner only) if missing. The directory
    /// must be the agent's own and no symbolic link; one that group or
    /// others may write to (kubelet makes an emptyDir 0777) is made owner
    /// only. What a crash left of the fallback's named files is removed. A
    /// file is made and dropped at once, so an unusable directory fails the
    /// commit before anything is paused or built.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        let error = |source| SpoolError {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(error)?;
        let handle = open_trusted_directory(dir).map_err(error)?;
        let spool = Self {
            dir: dir.to_path_buf(),
            handle: Arc::new(handle),
        };
        spool.remove_leftovers().map_err(error)?;
        spool.anonymous_file().map_err(error)?;
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
        match rustix::fs::openat(&*self.handle, ".", flags, Mode::RUSR | Mode::WUSR) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::OPNOTSUPP | Errno::ISDIR) => self.named_then_unlinked(),
            Err(e) => Err(e.into()),
        }
    }

    /// The fallback of `anonymous_file`: a new name, never one that exists
    /// (nor a link), unlinked at once. Another commit's `open` may have
    /// taken the name for a crash's leftover and unlinked it first.
    fn named_then_unlinked(&self) -> io::Result<File> {
        let name = format!("{FALLBACK_PREFIX}{}", uuid::Uuid::new_v4());
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&*self.handle, &name, flags, Mode::RUSR | Mode::WUSR)?;
        match rustix::fs::unlinkat(&*self.handle, &name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(File::from(fd)),
            Err(e) => Err(e.into()),
        }
    }

    /// Unlinks the fallback's named files that a crash left between their
    /// creation and their unlinking: regular files of ours, by name, never
    /// through a symbolic link.
    fn remove_leftovers(&self) -> io::Result<()> {
        let own = rustix::process::geteuid().as_raw();
        for entry in rustix::fs::Dir::read_from(&*self.handle)? {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_bytes().starts_with(FALLBACK_PREFIX.as_bytes()) {
                continue;
            }
            let stat = match rustix::fs::statat(&*self.handle, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile || stat.st_uid != own
            {
                continue;
            }
            match rustix::fs::unlinkat(&*self.handle, name, AtFlags::empty()) {
                Ok(()) => tracing::info!(
                    file = %self.dir.join(OsStr::from_bytes(name.to_bytes())).display(),
                    "removed a spool file left by a crash"
                ),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Opens the spool directory itself (a symbolic link in its place is
/// refused) and checks that it is the agent's own: whoever else owns it
/// could read or replace the layers. Write access for group or others is
/// taken away, through the handle (the name may have changed since).
fn open_trusted_directory(dir: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let handle = rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| {
        // A link is refused with ENOTDIR or ELOOP: say which it was.
        let link = matches!(e, Errno::NOTDIR | Errno::LOOP)
            && std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
        if link {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link (the spool must be a directory of its own)",
            )
        } else {
            e.into()
        }
    })?;
    let stat = rustix::fs::fstat(&handle)?;
    let own = rustix::process::geteuid().as_raw();
    if stat.st_uid != own {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it belongs to uid {}, not to the agent's uid {own}",
                stat.st_uid
            ),
        ));
    }
    let mode = Mode::from_raw_mode(stat.st_mode);
    // Made to be shared (`/tmp`): taking others' access away would break
    // them, and the spool needs a directory of its own anyway.
    if mode.contains(Mode::SVTX) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it is a shared directory (sticky bit, like /tmp), not one of the agent's own",
        ));
    }
    if mode.intersects(Mode::WGRP | Mode::WOTH) {
        rustix::fs::fchmod(&handle, Mode::RWXU)?;
    }
    Ok(handle)
}

/// Writes a layer's chunks to its spool file on a thread of its own.
#[derive(Debug)]
pub struct SpoolWriter {
    dir: PathBuf,
    sender: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<io::Result<(File, u64)>>>,
    /// Set when the writer is dropped unfinished: the thread then discards
    /// the chunks still queued instead of writing them.
    abandoned: Arc<AtomicBool>,
}

impl SpoolWriter {
    fn start(file: File, dir: PathBuf) -> io::Result<Self> {
        let (sender, receiver) = sync_channel::<Vec<u8>>(QUEUE);
        let abandoned = Arc::new(AtomicBool::new(false));
        let seen_by_thread = abandoned.clone();
        let thread = std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || write_chunks(file, receiver, &seen_by_thread))?;
        Ok(Self {
            dir,
            sender: Some(sender),
            thread: Some(thread),
            abandoned,
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
        // Unfinished (a failed or cancelled build): the thread ends without
        // writing what is queued, and the file goes with it.
        if self.thread.is_some() {
            self.abandoned.store(true, Ordering::Relaxed);
        }
        self.sender = None;
    }
}

fn write_chunks(
    mut file: File,
    receiver: Receiver<Vec<u8>>,
    abandoned: &AtomicBool,
) -> io::Result<(File, u64)> {
    let mut size = 0u64;
    for chunk in receiver {
        if abandoned.load(Ordering::Relaxed) {
            return Err(io::Error::other("the layer was abandoned"));
        }
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

    /// A new reader of the blob, from its start. Each has a file offset of
    /// its own (the file is opened again, read only, through `/proc`; a
    /// duplicated descriptor would share one offset with every other), so
    /// readers may overlap: a push given up half-way while its retry reads.
    pub fn reader(&self) -> io::Result<File> {
        File::open(format!("/proc/self/fd/{}", self.file.as_fd().as_raw_fd()))
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
        blob.reader().unwrap().read_exact(&mut head).unwrap();
        let mut all = Vec::new();
        blob.reader().unwrap().read_to_end(&mut all).unwrap();
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

    fn spooled(content: &[u8]) -> (tempfile::TempDir, SpooledBlob) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let mut writer = spool.writer().unwrap();
        for chunk in content.chunks(32 * 1024) {
            writer.write(chunk.to_vec()).unwrap();
        }
        (dir, writer.finish().unwrap())
    }

    #[test]
    fn readers_that_overlap_each_read_the_whole_blob() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let (_dir, blob) = spooled(&content);
        let mut first = blob.reader().unwrap();
        let mut second = blob.reader().unwrap();
        let (mut seen_first, mut seen_second) = (Vec::new(), Vec::new());
        let mut buffer = [0u8; 7_000];
        loop {
            let a = first.read(&mut buffer).unwrap();
            seen_first.extend_from_slice(&buffer[..a]);
            let b = second.read(&mut buffer).unwrap();
            seen_second.extend_from_slice(&buffer[..b]);
            if a == 0 && b == 0 {
                break;
            }
        }
        assert!(seen_first == content, "the first reader saw another blob");
        assert!(seen_second == content, "the second reader saw another blob");
    }

    #[test]
    fn a_symbolic_link_in_place_of_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("spool");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let error = Spool::open(&link).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        use std::os::unix::fs::MetadataExt;
        // The tests run as root, which can give the directory away.
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root, to give the directory to another user"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::create_dir(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        let error = Spool::open(&path).unwrap_err();
        assert!(error.to_string().contains("uid 4242"), "{error}");
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 4242);
    }

    #[test]
    fn a_directory_others_may_write_to_is_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::create_dir(&path).unwrap();
        // What kubelet makes of an emptyDir.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        Spool::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
    }

    #[test]
    fn a_shared_sticky_directory_is_refused_and_left_as_it_is() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tmp");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let error = Spool::open(&path).unwrap_err();
        assert!(error.to_string().contains("shared"), "{error}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }

    #[test]
    fn a_crash_s_leftovers_are_removed_but_not_links_nor_others_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("layer-left-by-a-crash"), b"old layer").unwrap();
        let outside = dir.path().join("precious");
        std::fs::write(&outside, b"not the spool's").unwrap();
        std::os::unix::fs::symlink(&outside, path.join("layer-x")).unwrap();
        std::fs::write(path.join("layer-of-someone-else"), b"theirs").unwrap();
        std::os::unix::fs::chown(path.join("layer-of-someone-else"), Some(4242), None).unwrap();
        std::fs::write(path.join("notes"), b"not a layer").unwrap();

        Spool::open(&path).unwrap();

        let mut left: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["layer-of-someone-else", "layer-x", "notes"]);
        assert!(
            std::fs::symlink_metadata(path.join("layer-x"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&outside).unwrap(), b"not the spool's");
    }

    #[test]
    fn the_fallback_file_is_usable_and_has_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let spool = Spool::open(&path).unwrap();
        let mut file = spool.named_then_unlinked().unwrap();
        file.write_all(b"layer").unwrap();
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
    }

    #[test]
    fn files_are_made_in_the_directory_that_was_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let spool = Spool::open(&path).unwrap();
        // The name now points elsewhere: the spool still writes where it
        // checked.
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let mut writer = spool.writer().unwrap();
        writer.write(vec![7u8; 1000]).unwrap();
        let blob = writer.finish().unwrap();
        let fd_target =
            std::fs::read_link(format!("/proc/self/fd/{}", blob.file.as_fd().as_raw_fd())).unwrap();
        assert!(
            fd_target.starts_with(dir.path().join("moved")),
            "{}",
            fd_target.display()
        );
    }

    #[test]
    fn a_dropped_unfinished_writer_writes_no_more() {
        let (sender, receiver) = sync_channel::<Vec<u8>>(QUEUE);
        let abandoned = AtomicBool::new(false);
        let file = tempfile::tempfile().unwrap();
        sender.send(vec![1u8; 10]).unwrap();
        abandoned.store(true, Ordering::Relaxed);
        drop(sender);
        let error = write_chunks(file, receiver, &abandoned).unwrap_err();
        assert!(error.to_string().contains("abandoned"), "{error}");
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
