//! A root file system as a comparable list: every entry's kind, mode,
//! owner, extended attributes, link target, device numbers and content
//! hash, and which entries are hard links of one another. Times are left
//! out: a commit may keep them or not, a running image does not care.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Path (relative to the root, `.` for the root) to its description.
pub type Tree = BTreeMap<String, String>;

/// Walks `root` without following links or crossing into other mounts.
pub fn describe(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut first_link: HashMap<(u64, u64), String> = HashMap::new();
    let root_dev = std::fs::symlink_metadata(root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .dev();
    walk(root, root, root_dev, &mut first_link, &mut tree);
    tree
}

fn walk(
    root: &Path,
    path: &Path,
    root_dev: u64,
    first_link: &mut HashMap<(u64, u64), String>,
    tree: &mut Tree,
) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let name = match path.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.to_string_lossy().to_string(),
        Err(_) => unreachable!("walked outside the root"),
    };
    let kind = meta.file_type();
    let mut text = format!(
        "{} mode={:o} owner={}:{}",
        kind_letter(&meta),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
    let xattrs = xattrs(path);
    if !xattrs.is_empty() {
        text.push_str(&format!(" xattrs={xattrs:?}"));
    }
    if kind.is_symlink() {
        let target = std::fs::read_link(path).expect("read link");
        text.push_str(&format!(" -> {}", target.display()));
    } else if kind.is_file() {
        let data = std::fs::read(path).expect("read file");
        text.push_str(&format!(
            " size={} sha256={}",
            data.len(),
            hex::encode(Sha256::digest(&data))
        ));
        if meta.nlink() > 1 {
            let first = first_link
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| name.clone());
            text.push_str(&format!(" linked-with={first}"));
        }
    } else if kind.is_char_device() || kind.is_block_device() {
        text.push_str(&format!(" rdev={:x}", meta.rdev()));
    }
    tree.insert(name, text);
    if kind.is_dir() && meta.dev() == root_dev {
        let mut children: Vec<_> = std::fs::read_dir(path)
            .expect("read dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        children.sort();
        for child in children {
            walk(root, &child, root_dev, first_link, tree);
        }
    }
}

fn kind_letter(meta: &std::fs::Metadata) -> char {
    let kind = meta.file_type();
    if kind.is_dir() {
        'd'
    } else if kind.is_symlink() {
        'l'
    } else if kind.is_file() {
        'f'
    } else if kind.is_char_device() {
        'c'
    } else if kind.is_block_device() {
        'b'
    } else if kind.is_fifo() {
        'p'
    } else {
        's'
    }
}

/// The entry's own extended attributes, by name. overlayfs's private ones
/// (`trusted.overlay.*`) never show through a mounted overlay.
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 64 * 1024];
    let Ok(len) = rustix::fs::llistxattr(path, &mut names) else {
        return BTreeMap::new();
    };
    names[..len]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| {
            let name = String::from_utf8_lossy(n).to_string();
            let mut value = vec![0u8; 64 * 1024];
            let size = rustix::fs::lgetxattr(path, name.as_str(), &mut value).unwrap_or(0);
            value.truncate(size);
            (name, value)
        })
        .collect()
}

/// The entries that differ between two trees, each side's description
/// (`None`: absent), at most `limit` of them.
pub fn differences(
    a: &Tree,
    b: &Tree,
    limit: usize,
) -> Vec<(String, Option<String>, Option<String>)> {
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .take(limit)
        .map(|p| (p.clone(), a.get(p).cloned(), b.get(p).cloned()))
        .collect()
}
