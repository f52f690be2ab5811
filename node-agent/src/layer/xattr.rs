//! Extended attributes of a path (not following symlinks).

use std::io;
use std::path::Path;

use rustix::io::Errno;

/// All extended attributes of `path`, sorted by name. Names that are not
/// UTF-8 cannot be written to a PAX record and are skipped.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let length = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => names.resize(names.len() * 4, 0),
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
        if let Some(value) = read_value(path, name)? {
            attributes.push((name.to_string(), value));
        }
    }
    attributes.sort();
    Ok(attributes)
}

fn read_value(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            Err(Errno::RANGE) => value.resize(value.len() * 4, 0),
            // Removed between listing and reading.
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}
