//! Reading layers back: the entries of a (compressed) layer tar, to compare
//! what the agent wrote with what containerd writes and with expectations;
//! [`apply`] models unpacking them into a root file system.

pub mod apply;

use std::collections::BTreeMap;
use std::io::Read;

use sha2::{Digest, Sha256};

/// One entry, with what the comparison looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: String,
    /// `f` file, `d` directory, `l` symlink, `h` hardlink, `c`/`b` device,
    /// `p` fifo.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub link: String,
    pub content_sha256: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub device: (u32, u32),
}

/// Decompresses by magic number: gzip, zstd or plain tar.
pub fn decompress(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("gunzip layer");
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(blob)
            .expect("zstd layer")
            .read_to_end(&mut out)
            .expect("unzstd layer");
    } else {
        out = blob.to_vec();
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The entries of an uncompressed tar, by path (without `./` or trailing `/`).
pub fn entries(tar_bytes: &[u8]) -> BTreeMap<String, LayerEntry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut map = BTreeMap::new();
    for item in archive.entries().expect("tar entries") {
        let mut item = item.expect("tar entry");
        let mut path = String::from_utf8_lossy(&item.path_bytes()).to_string();
        while path.ends_with('/') {
            path.pop();
        }
        let path = path.trim_start_matches("./").to_string();
        let header = item.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            other => panic!("unexpected entry type {other:?} for {path}"),
        };
        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = item.pax_extensions().expect("pax") {
            for e in extensions {
                let e = e.expect("pax record");
                if let Ok(key) = e.key()
                    && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.insert(name.to_string(), e.value_bytes().to_vec());
                }
            }
        }
        let link = item
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).to_string())
            .unwrap_or_default();
        let mut content = Vec::new();
        item.read_to_end(&mut content).expect("entry data");
        map.insert(
            path.clone(),
            LayerEntry {
                path,
                kind,
                mode: header.mode().expect("mode") & 0o7777,
                uid: header.uid().expect("uid"),
                gid: header.gid().expect("gid"),
                size: content.len() as u64,
                link,
                content_sha256: if kind == 'f' {
                    sha256_hex(&content)
                } else {
                    String::new()
                },
                xattrs,
                device: (
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                ),
            },
        );
    }
    map
}
