//! Reading a container's file system as hostile input.
//!
//! The agent runs as root on a node that many tenants share, and a speaker
//! is root inside their desktop: while we read, they can rename, swap
//! (`renameat2(RENAME_EXCHANGE)`) and re-create any name under the upper
//! directory. A path looked at twice may be two different things, and a
//! symlink followed by the host resolves against the host's root.
//!
//! So nothing here resolves a path. An entry is first *pinned*: opened with
//! `O_PATH | O_NOFOLLOW` relative to its parent's descriptor, which holds
//! whatever the name is at that instant (a symlink stays a symlink) and
//! never runs a device's or FIFO's open routine. Its metadata comes from
//! that descriptor, and so does everything read afterwards:
//! - a directory is listed through `openat(pinned, ".")`;
//! - a regular file is read through `/proc/self/fd/N` of the pinned
//!   descriptor, which re-opens exactly that inode (and is used only after
//!   `fstat` said it is a regular file, so no device is ever opened);
//! - a symlink's target is read with `readlinkat(pinned, "")`.
//!
//! Whatever the name turns into later, we keep what we pinned: the layer
//! records what the entry was when we looked, never what a link points to.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// An entry held by an `O_PATH` descriptor, with its metadata.
#[derive(Debug)]
pub struct Pinned {
    fd: OwnedFd,
    pub stat: Stat,
}

impl Pinned {
    /// Pins `name` in `dir`; `None` when it no longer exists.
    pub fn open(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Self>> {
        debug_assert!(!name.to_bytes().contains(&b'/'));
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        Ok(Some(Self { fd, stat }))
    }

    /// Pins a directory the host gave us (the upper directory itself).
    pub fn open_root(path: &Path) -> io::Result<Self> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        let stat = rustix::fs::fstat(&fd)?;
        Ok(Self { fd, stat })
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }

    /// (device, inode): the entry's identity.
    pub fn identity(&self) -> (u64, u64) {
        (self.stat.st_dev, self.stat.st_ino)
    }

    /// A descriptor to list the pinned directory and open its entries.
    pub fn open_directory(&self) -> io::Result<OwnedFd> {
        if self.file_type() != FileType::Directory {
            return Err(Errno::NOTDIR.into());
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(&self.fd, c".", flags, Mode::empty())?)
    }

    /// The pinned regular file, opened for reading.
    pub fn open_file(&self) -> io::Result<File> {
        if self.file_type() != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = rustix::fs::open(self.proc_path(), flags, Mode::empty())?;
        // The magic link names the inode itself; check it all the same.
        let opened = rustix::fs::fstat(&fd)?;
        if (opened.st_dev, opened.st_ino) != self.identity() {
            return Err(io::Error::other("re-opened a different file"));
        }
        Ok(File::from(fd))
    }

    /// The pinned symlink's target (never followed).
    pub fn link_target(&self) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, c"", Vec::new())?.into_bytes())
    }

    /// The `O_PATH` descriptor itself, to open entries below a directory.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// `/proc/self/fd/N`: the pinned inode, for the calls that take a path.
    pub fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

/// The names in a directory (without `.` and `..`), sorted bytewise.
pub fn list_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for item in Dir::read_from(dir)? {
        let item = item?;
        let name = item.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// Re-opens directory `name` in `dir` for listing, only if it is still the
/// directory with `identity`; `None` when something else has that name now.
pub fn reopen_directory(
    dir: BorrowedFd<'_>,
    name: &CStr,
    identity: (u64, u64),
) -> io::Result<Option<OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stat = rustix::fs::fstat(&fd)?;
    Ok(((stat.st_dev, stat.st_ino) == identity).then_some(fd))
}

/// A path for the xattr calls that do not follow the last link: the name
/// inside the directory held by `dir`, reached through `/proc/self/fd`.
/// Used for entries that cannot be opened without side effects (symlinks,
/// devices, FIFOs); the name cannot lead out of that directory.
pub fn entry_proc_path(dir: BorrowedFd<'_>, name: &CStr) -> std::path::PathBuf {
    let mut path = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&path))
}
