//! A small tar writer for layer entries: ustar headers, with PAX records
//! for what ustar cannot hold (long names, big numbers, extended attributes).
//!
//! Our own writer rather than the `tar` crate's `Builder` because a layer
//! needs exact control of names (raw bytes, trailing `/` on directories)
//! and of the `SCHILY.xattr.*` records, and never anything a layer must not
//! contain. The header fields are set through `tar::Header`, except the
//! checksum (see `set_checksum`).

use std::fmt;
use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// File data is copied through a buffer of this size.
const COPY_BUFFER: usize = 256 * 1024;

/// Maximum values of the ustar octal fields (with their NUL terminator).
const MAX_OCTAL_7: u64 = 0o7_777_777;
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

impl EntryKind {
    fn entry_type(self) -> tar::EntryType {
        match self {
            Self::File => tar::EntryType::Regular,
            Self::HardLink => tar::EntryType::Link,
            Self::Symlink => tar::EntryType::Symlink,
            Self::CharDevice => tar::EntryType::Char,
            Self::BlockDevice => tar::EntryType::Block,
            Self::Directory => tar::EntryType::Directory,
            Self::Fifo => tar::EntryType::Fifo,
        }
    }
}

/// Extended attributes: (name, value), sorted by name.
pub type Xattrs = Vec<(String, Vec<u8>)>;

/// One entry of a layer. `path` is relative to the root, without a leading
/// or trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Data length; only regular files have data.
    pub size: u64,
    pub mtime: i64,
    /// Target of a symlink, or the path of the first name of a hardlink.
    pub link: Vec<u8>,
    pub device_major: u32,
    pub device_minor: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Xattrs,
}

impl Entry {
    /// An entry with everything but the path and kind zero: for whiteouts.
    pub fn empty(path: Vec<u8>, kind: EntryKind) -> Self {
        Self {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: Vec::new(),
            device_major: 0,
            device_minor: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Why an entry could not be appended: its data could not be read, or the
/// output could not be written.
#[derive(Debug)]
pub enum AppendError {
    Read(io::Error),
    Write(io::Error),
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        Self::Write(e)
    }
}

/// Where a walk puts the entries of a layer: a tar stream, or (for a
/// preview) a tally that writes nothing.
pub trait EntrySink {
    /// One entry of the layer, with the data of a regular file.
    fn append(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), AppendError>;

    /// An entry an exclude pattern keeps out of the layer (`pattern`
    /// indexes the patterns in force); `matched` when the pattern matched
    /// it rather than a directory above it. Only previews walk these.
    fn excluded(&mut self, _pattern: usize, _entry: &Entry, _matched: bool) {}
}

impl<W: Write> EntrySink for TarWriter<W> {
    fn append(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), AppendError> {
        TarWriter::append(self, entry, data)
    }
}

/// Writes entries to `out` as a tar stream.
pub struct TarWriter<W: Write> {
    out: W,
    buffer: Vec<u8>,
    entries: u64,
}

impl<W: Write> fmt::Debug for TarWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarWriter")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            buffer: vec![0; COPY_BUFFER],
            entries: 0,
        }
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Appends one entry. For a regular file, exactly `entry.size` bytes are
    /// written: a file that shrank while being read is padded with zeros and
    /// one that grew is cut, so the archive stays well-formed.
    pub fn append(
        &mut self,
        entry: &Entry,
        data: Option<&mut dyn Read>,
    ) -> Result<(), AppendError> {
        let mut name = entry.path.clone();
        if entry.kind == EntryKind::Directory {
            name.push(b'/');
        }
        let size = if entry.kind == EntryKind::File {
            entry.size
        } else {
            0
        };

        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let (ustar_name, ustar_prefix) = match split_ustar_path(&name) {
            Some(split) => split,
            None => {
                pax.push(("path".into(), name.clone()));
                (truncate(&name, 100), Vec::new())
            }
        };
        if entry.link.len() > 100 {
            pax.push(("linkpath".into(), entry.link.clone()));
        }
        if entry.uid > MAX_OCTAL_7 {
            pax.push(("uid".into(), entry.uid.to_string().into_bytes()));
        }
        if entry.gid > MAX_OCTAL_7 {
            pax.push(("gid".into(), entry.gid.to_string().into_bytes()));
        }
        if size > MAX_OCTAL_11 {
            pax.push(("size".into(), size.to_string().into_bytes()));
        }
        if entry.mtime < 0 || entry.mtime as u64 > MAX_OCTAL_11 {
            pax.push(("mtime".into(), entry.mtime.to_string().into_bytes()));
        }
        for (key, value) in &entry.xattrs {
            pax.push((format!("SCHILY.xattr.{key}"), value.clone()));
        }
        if !pax.is_empty() {
            self.write_pax(&name, &pax)?;
        }

        // Numbers too big for their octal field were written as PAX records
        // above; the field holds 0 (the `tar` crate would write binary).
        let mut header = tar::Header::new_ustar();
        put_bytes(&mut header.as_old_mut().name, &ustar_name);
        header.set_mode(entry.mode & 0o7777);
        header.set_uid(clamp(entry.uid, MAX_OCTAL_7));
        header.set_gid(clamp(entry.gid, MAX_OCTAL_7));
        header.set_size(clamp(size, MAX_OCTAL_11));
        let mtime = if entry.mtime < 0 {
            0
        } else {
            entry.mtime as u64
        };
        header.set_mtime(clamp(mtime, MAX_OCTAL_11));
        header.set_entry_type(entry.kind.entry_type());
        put_bytes(
            &mut header.as_old_mut().linkname,
            &truncate(&entry.link, 100),
        );
        if let Some(ustar) = header.as_ustar_mut() {
            if matches!(entry.kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
                ustar.set_device_major(entry.device_major);
                ustar.set_device_minor(entry.device_minor);
            }
            put_bytes(&mut ustar.prefix, &ustar_prefix);
        }
        set_checksum(&mut header);
        self.out.write_all(header.as_bytes())?;

        if size > 0 {
            self.copy_data(data, size)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Writes the two zero blocks that end an archive and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }

    fn copy_data(&mut self, data: Option<&mut dyn Read>, size: u64) -> Result<(), AppendError> {
        let mut remaining = size;
        if let Some(reader) = data {
            while remaining > 0 {
                let want = remaining.min(self.buffer.len() as u64) as usize;
                let read = match reader.read(&mut self.buffer[..want]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(AppendError::Read(e)),
                };
                self.out.write_all(&self.buffer[..read])?;
                remaining -= read as u64;
            }
        }
        // Pad a file that shrank, then pad to the block size.
        self.buffer.fill(0);
        while remaining > 0 {
            let n = remaining.min(self.buffer.len() as u64) as usize;
            self.out.write_all(&self.buffer[..n])?;
            remaining -= n as u64;
        }
        let tail = (size % BLOCK as u64) as usize;
        if tail != 0 {
            self.out.write_all(&self.buffer[..BLOCK - tail])?;
        }
        Ok(())
    }

    fn write_pax(&mut self, name: &[u8], records: &[(String, Vec<u8>)]) -> io::Result<()> {
        let mut body = Vec::new();
        for (key, value) in records {
            body.extend_from_slice(&pax_record(key, value));
        }
        let base = name
            .rsplit(|&b| b == b'/')
            .find(|part| !part.is_empty())
            .unwrap_or(b"entry");
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend_from_slice(base);
        let mut header = tar::Header::new_ustar();
        put_bytes(&mut header.as_old_mut().name, &truncate(&pax_name, 100));
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(body.len() as u64);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::XHeader);
        set_checksum(&mut header);
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(&body)?;
        let tail = body.len() % BLOCK;
        if tail != 0 {
            self.out.write_all(&vec![0u8; BLOCK - tail])?;
        }
        Ok(())
    }
}

/// `"<length> <key>=<value>\n"`, where the length counts the whole record,
/// its own digits included.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // space, '=', newline
    let mut length = rest + 1;
    while length != rest + length.to_string().len() {
        length = rest + length.to_string().len();
    }
    let mut record = format!("{length} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// Splits a name into ustar's `name` (100 bytes) and `prefix` (155 bytes)
/// fields at a `/`, or `None` when it does not fit.
fn split_ustar_path(path: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if path.len() <= 100 {
        return Some((path.to_vec(), Vec::new()));
    }
    if path.len() > 256 {
        return None;
    }
    // The last usable '/': prefix at most 155 bytes, name at most 100.
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    (0..trimmed.len())
        .rev()
        .filter(|&i| trimmed[i] == b'/')
        .find(|&i| i <= 155 && path.len() - i - 1 <= 100 && i + 1 < trimmed.len())
        .map(|i| (path[i + 1..].to_vec(), path[..i].to_vec()))
}

fn truncate(bytes: &[u8], max: usize) -> Vec<u8> {
    bytes[..bytes.len().min(max)].to_vec()
}

fn clamp(value: u64, max: u64) -> u64 {
    if value > max { 0 } else { value }
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// The checksum as GNU tar and Go's archive/tar (containerd) write it, six
/// digits, NUL, space; the `tar` crate writes seven digits and a NUL, which
/// would change every layer's bytes and digest.
fn set_checksum(header: &mut tar::Header) {
    let bytes = header.as_mut_bytes();
    bytes[148..156].fill(b' ');
    let sum: u32 = bytes.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    bytes[148..156].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry {
            size: data.len() as u64,
            mode: 0o4755,
            uid: 1000,
            gid: 3_000_000,
            mtime: 1_700_000_000,
            ..Entry::empty(path.as_bytes().to_vec(), EntryKind::File)
        }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"abc"), b"12 path=abc\n");
        let long = vec![b'x'; 95];
        let record = pax_record("path", &long);
        assert_eq!(record.len(), 105);
        assert!(record.starts_with(b"105 path="));
    }

    #[test]
    fn tar_crate_reads_what_we_write() {
        let long_name = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        let mut writer = TarWriter::new(Vec::new());
        let mut dir = Entry::empty(b"etc".to_vec(), EntryKind::Directory);
        dir.mode = 0o1777;
        dir.xattrs = vec![("user.note".into(), b"hello".to_vec())];
        writer.append(&dir, None).unwrap();
        let data = b"some data";
        writer
            .append(&file("etc/caf\u{e9} x", data), Some(&mut &data[..]))
            .unwrap();
        writer
            .append(&file(&long_name, b"z"), Some(&mut &b"z"[..]))
            .unwrap();
        // A file that shrank: declared 10 bytes, only 3 available.
        let mut short = file("short", b"0123456789");
        short.size = 10;
        writer.append(&short, Some(&mut &b"abc"[..])).unwrap();
        let mut link = Entry::empty(b"link".to_vec(), EntryKind::Symlink);
        link.link = format!("/{}", "t".repeat(200)).into_bytes();
        writer.append(&link, None).unwrap();
        let mut dev = Entry::empty(b"dev/null".to_vec(), EntryKind::CharDevice);
        dev.device_major = 1;
        dev.device_minor = 3;
        writer.append(&dev, None).unwrap();
        let bytes = writer.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);

        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
            let kind = entry.header().entry_type();
            let mut xattrs = Vec::new();
            if let Some(ext) = entry.pax_extensions().unwrap() {
                for e in ext {
                    let e = e.unwrap();
                    if let Ok(k) = e.key()
                        && k.starts_with("SCHILY.xattr.")
                    {
                        xattrs.push((k.to_string(), e.value_bytes().to_vec()));
                    }
                }
            }
            let link = entry.link_name_bytes().map(|l| l.to_vec());
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            seen.push((path, kind, xattrs, link, content));
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[0].0, "etc/");
        assert!(seen[0].1.is_dir());
        assert_eq!(
            seen[0].2,
            vec![("SCHILY.xattr.user.note".to_string(), b"hello".to_vec())]
        );
        assert_eq!(seen[1].0, "etc/caf\u{e9} x");
        assert_eq!(seen[1].4, data);
        assert_eq!(seen[2].0, long_name);
        assert_eq!(seen[3].4, b"abc\0\0\0\0\0\0\0");
        assert_eq!(seen[4].3.as_deref(), Some(link.link.as_slice()));
        assert_eq!(seen[5].1, tar::EntryType::Char);
    }

    /// Layers must be byte-for-byte what they were (digests, the
    /// differential tests against containerd's diff): one archive with
    /// every kind of entry and every PAX record, pinned by its digest.
    #[test]
    fn archive_bytes_do_not_change() {
        let mut writer = TarWriter::new(Vec::new());
        let mut dir = Entry::empty(b"etc".to_vec(), EntryKind::Directory);
        dir.mode = 0o1777;
        dir.xattrs = vec![("security.capability".into(), vec![1, 0, 0, 2])];
        writer.append(&dir, None).unwrap();
        let data = b"some data";
        writer
            .append(&file("etc/caf\u{e9} x", data), Some(&mut &data[..]))
            .unwrap();
        let long_name = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        writer
            .append(&file(&long_name, b"z"), Some(&mut &b"z"[..]))
            .unwrap();
        let split_name = format!("{}/{}", "a".repeat(150), "b".repeat(90));
        writer
            .append(&file(&split_name, b""), Some(&mut &b""[..]))
            .unwrap();
        let mut big = file("big", b"");
        big.uid = u64::from(u32::MAX);
        big.mtime = -5;
        writer.append(&big, Some(&mut &b""[..])).unwrap();
        let mut future = file("future", b"");
        future.mtime = 0o100_000_000_000;
        writer.append(&future, Some(&mut &b""[..])).unwrap();
        let mut link = Entry::empty(b"link".to_vec(), EntryKind::Symlink);
        link.link = format!("/{}", "t".repeat(200)).into_bytes();
        writer.append(&link, None).unwrap();
        let mut hard = Entry::empty(b"hard".to_vec(), EntryKind::HardLink);
        hard.link = b"etc/caf\xc3\xa9 x".to_vec();
        writer.append(&hard, None).unwrap();
        for (name, kind) in [
            ("dev/null", EntryKind::CharDevice),
            ("dev/sda", EntryKind::BlockDevice),
        ] {
            let mut dev = Entry::empty(name.as_bytes().to_vec(), kind);
            dev.mode = 0o666;
            dev.device_major = 4_000_000_000;
            dev.device_minor = 3;
            writer.append(&dev, None).unwrap();
        }
        writer
            .append(&Entry::empty(b"fifo".to_vec(), EntryKind::Fifo), None)
            .unwrap();
        writer
            .append(
                &Entry::empty(b"etc/.wh.gone".to_vec(), EntryKind::File),
                None,
            )
            .unwrap();
        let bytes = writer.finish().unwrap();
        assert_eq!(
            crate::image::sha256_digest(&bytes),
            "sha256:ad6b122e270093cd7f90e5873e2128f217eb81a9af3baee292c365c1e4c60c42"
        );
    }

    #[test]
    fn ustar_split_keeps_names_within_fields() {
        let path = format!("{}/{}", "a".repeat(150), "b".repeat(90));
        let (name, prefix) = split_ustar_path(path.as_bytes()).unwrap();
        assert_eq!(prefix.len(), 150);
        assert_eq!(name.len(), 90);
        assert!(split_ustar_path("c".repeat(101).as_bytes()).is_none());
    }
}
