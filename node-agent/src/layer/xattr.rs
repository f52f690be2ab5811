//! Extended attributes of a pinned entry (see `pinned`).
//!
//! Two ways to name the entry, because the kernel offers no descriptor-based
//! xattr call for `O_PATH` descriptors before Linux 6.13:
//! - `Follow(/proc/self/fd/N)`: the magic link of the pinned descriptor; the
//!   kernel lands on that inode itself. For everything but symlinks.
//! - `NoFollow(/proc/self/fd/DIR/name)`: the name inside the pinned parent,
//!   last component not followed. For symlinks, whose xattrs are their own.

use std::io;
use std::path::Path;

use rustix::io::Errno;

/// How to reach the entry whose attributes are read.
#[derive(Debug)]
pub enum XattrTarget<'a> {
    Follow(&'a Path),
    NoFollow(&'a Path),
}

impl XattrTarget<'_> {
    fn list(&self, buffer: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Self::Follow(p) => rustix::fs::listxattr(*p, buffer),
            Self::NoFollow(p) => rustix::fs::llistxattr(*p, buffer),
        }
    }

    fn get(&self, name: &str, buffer: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Self::Follow(p) => rustix::fs::getxattr(*p, name, buffer),
            Self::NoFollow(p) => rustix::fs::lgetxattr(*p, name, buffer),
        }
    }
}

/// All extended attributes, sorted by name. Names that are not UTF-8
/// cannot be written to a PAX record and are skipped. A list or value
/// larger than the kernel allows (64 KiB) is an error, not a reason to
/// grow without end.
pub fn read_xattrs(target: XattrTarget<'_>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let length = loop {
        match target.list(&mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) if names.len() < XATTR_LIMIT => names.resize(names.len() * 4, 0),
            // File systems without xattr support have none to keep.
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut attributes = Vec::new();
    for name in names[..length].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if let Some(value) = read_value(&target, name)? {
            attributes.push((name.to_string(), value));
        }
    }
    attributes.sort();
    Ok(attributes)
}

/// The kernel's limit for one value and for the list of names.
const XATTR_LIMIT: usize = 64 * 1024;

fn read_value(target: &XattrTarget<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; 256];
    loop {
        match target.get(name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            Err(Errno::RANGE) if value.len() < XATTR_LIMIT => value.resize(value.len() * 4, 0),
            // Removed between listing and reading.
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}
