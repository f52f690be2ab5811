//! A model of OCI layer application (the image-spec's changeset rules):
//! what a container's root file system is after unpacking layers in order,
//! so that two layers can be compared by the tree they produce rather than
//! by how each writer spells whiteouts and hardlinks.

use std::collections::BTreeMap;

use super::LayerEntry;

/// A file in an unpacked image, as far as this comparison cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub link: String,
    pub content: String,
    pub device: (u32, u32),
    /// The one xattr both writers keep.
    pub capability: Option<Vec<u8>>,
    /// Names sharing this number are hardlinks of one file.
    pub inode: u64,
}

#[derive(Debug, Default)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    next_inode: u64,
}

fn split_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A hardlink target as a path of the tree (no `./` or `/` in front).
pub fn link_path(link: &str) -> String {
    link.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

impl Tree {
    fn remove_tree(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &str) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .retain(|p, _| !(p.starts_with(&prefix) && p.len() > prefix.len()));
    }

    /// Applies one layer: whiteouts and opaque markers act on the lower
    /// layers only, then the layer's entries are added (hardlinks last, so
    /// that their targets exist whatever the entry order).
    pub fn apply(&mut self, entries: &BTreeMap<String, LayerEntry>) {
        for path in entries.keys() {
            let (dir, name) = split_name(path);
            if name == ".wh..wh..opq" {
                self.remove_children(dir);
            } else if let Some(gone) = name.strip_prefix(".wh.") {
                self.remove_tree(&join(dir, gone));
            }
        }
        for hardlinks in [false, true] {
            for (path, entry) in entries {
                let (_, name) = split_name(path);
                if path.is_empty() || path == "." || name.starts_with(".wh.") {
                    continue;
                }
                if (entry.kind == 'h') != hardlinks {
                    continue;
                }
                let node = if entry.kind == 'h' {
                    let target = link_path(&entry.link);
                    self.nodes
                        .get(&target)
                        .unwrap_or_else(|| {
                            panic!("hardlink {path} points at {target}, which does not exist")
                        })
                        .clone()
                } else {
                    self.next_inode += 1;
                    Node {
                        kind: entry.kind,
                        mode: entry.mode,
                        uid: entry.uid,
                        gid: entry.gid,
                        size: entry.size,
                        link: entry.link.clone(),
                        content: entry.content_sha256.clone(),
                        device: if matches!(entry.kind, 'c' | 'b') {
                            entry.device
                        } else {
                            (0, 0)
                        },
                        capability: entry.xattrs.get("security.capability").cloned(),
                        inode: self.next_inode,
                    }
                };
                let both_dirs =
                    node.kind == 'd' && self.nodes.get(path).is_some_and(|old| old.kind == 'd');
                if !both_dirs {
                    self.remove_tree(path);
                }
                self.nodes.insert(path.clone(), node);
            }
        }
    }

    /// The tree without the paths `excluded` names, each node with the
    /// first name of its hardlink group instead of an inode number (inode
    /// numbers depend on the order of application; the groups do not).
    pub fn comparable(&self, excluded: impl Fn(&str) -> bool) -> BTreeMap<String, (Node, String)> {
        let kept: BTreeMap<&String, &Node> =
            self.nodes.iter().filter(|(p, _)| !excluded(p)).collect();
        let mut first_name: BTreeMap<u64, String> = BTreeMap::new();
        for (path, node) in &kept {
            first_name
                .entry(node.inode)
                .or_insert_with(|| (*path).clone());
        }
        kept.into_iter()
            .map(|(path, node)| {
                let group = first_name[&node.inode].clone();
                let mut node = node.clone();
                node.inode = 0;
                (path.clone(), (node, group))
            })
            .collect()
    }
}

/// The tree of `base`'s layers in order, then `top`.
pub fn apply_all(
    base: &[BTreeMap<String, LayerEntry>],
    top: &BTreeMap<String, LayerEntry>,
) -> Tree {
    let mut tree = Tree::default();
    for layer in base {
        tree.apply(layer);
    }
    tree.apply(top);
    tree
}

/// An entry as the direct comparison sees it: xattrs reduced to the one
/// containerd keeps, hardlink targets normalised.
pub fn comparable_entry(entry: &LayerEntry) -> LayerEntry {
    let mut entry = entry.clone();
    entry
        .xattrs
        .retain(|name, _| name.as_str() == "security.capability");
    if entry.kind == 'h' {
        entry.link = link_path(&entry.link);
    }
    if !matches!(entry.kind, 'c' | 'b') {
        entry.device = (0, 0);
    }
    entry
}

/// Is `path` a whiteout (`.wh.<name>`) or an opaque marker?
pub fn is_whiteout(path: &str) -> bool {
    split_name(path).1.starts_with(".wh.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: char) -> LayerEntry {
        LayerEntry {
            path: path.to_string(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            link: String::new(),
            content_sha256: format!("content of {path}"),
            xattrs: BTreeMap::new(),
            device: (0, 0),
        }
    }

    fn layer(entries: Vec<LayerEntry>) -> BTreeMap<String, LayerEntry> {
        entries.into_iter().map(|e| (e.path.clone(), e)).collect()
    }

    fn hardlink(path: &str, target: &str) -> LayerEntry {
        LayerEntry {
            link: target.to_string(),
            ..entry(path, 'h')
        }
    }

    fn paths(tree: &Tree) -> Vec<&str> {
        tree.nodes.keys().map(String::as_str).collect()
    }

    fn base() -> BTreeMap<String, LayerEntry> {
        layer(vec![
            entry("etc", 'd'),
            entry("etc/hostname", 'f'),
            entry("data", 'd'),
            entry("data/old", 'd'),
            entry("data/old/a", 'f'),
            entry("data/keep", 'f'),
        ])
    }

    #[test]
    fn a_whiteout_removes_the_lower_entry_and_everything_under_it() {
        let top = layer(vec![
            entry("etc/.wh.hostname", 'f'),
            entry("data/.wh.old", 'f'),
        ]);
        let tree = apply_all(&[base()], &top);
        assert_eq!(paths(&tree), ["data", "data/keep", "etc"]);
    }

    #[test]
    fn an_opaque_directory_hides_the_lower_children_but_keeps_its_own() {
        let top = layer(vec![
            entry("data", 'd'),
            entry("data/.wh..wh..opq", 'f'),
            entry("data/new", 'f'),
        ]);
        let tree = apply_all(&[base()], &top);
        assert_eq!(paths(&tree), ["data", "data/new", "etc", "etc/hostname"]);
    }

    #[test]
    fn a_directory_over_a_directory_merges_and_a_file_over_one_replaces_it() {
        let merged = apply_all(&[base()], &layer(vec![entry("data", 'd')]));
        assert!(merged.nodes.contains_key("data/old/a"));
        let replaced = apply_all(&[base()], &layer(vec![entry("data/old", 'f')]));
        assert_eq!(replaced.nodes["data/old"].kind, 'f');
        assert!(!replaced.nodes.contains_key("data/old/a"));
    }

    #[test]
    fn hardlinks_share_their_target_whatever_the_entry_order() {
        // "a-link" sorts before its target "b-file": hardlinks are applied last.
        let top = layer(vec![hardlink("a-link", "./b-file"), entry("b-file", 'f')]);
        let comparable = apply_all(&[], &top).comparable(|_| false);
        let (link, group) = &comparable["a-link"];
        let (file, file_group) = &comparable["b-file"];
        assert_eq!(link, file, "one file under two names");
        assert_eq!(group, "a-link");
        assert_eq!(file_group, "a-link", "grouped under the group's first name");
        assert_eq!(link_path("/b-file"), "b-file");
    }

    #[test]
    fn comparable_leaves_out_excluded_paths() {
        let tree = apply_all(&[base()], &layer(vec![]));
        let kept = tree.comparable(|p| p.starts_with("data/old"));
        assert!(!kept.contains_key("data/old") && !kept.contains_key("data/old/a"));
        assert!(kept.contains_key("data/keep"));
    }

    #[test]
    fn comparable_entries_keep_only_what_containerd_keeps() {
        let mut e = hardlink("x", "./y");
        e.xattrs.insert("user.note".into(), b"dropped".to_vec());
        e.xattrs
            .insert("security.capability".into(), b"kept".to_vec());
        e.device = (1, 3);
        let c = comparable_entry(&e);
        assert_eq!(c.link, "y");
        assert_eq!(c.xattrs.keys().collect::<Vec<_>>(), ["security.capability"]);
        assert_eq!(c.device, (0, 0));
        assert!(is_whiteout("dir/.wh.x") && is_whiteout(".wh..wh..opq") && !is_whiteout("dir/x"));
    }
}
