//! The tally a preview keeps of the entries a commit would write: counts,
//! bytes, the biggest files and directories, and what each exclude pattern
//! kept out. It is the walk's sink in place of the tar writer, so it sees
//! exactly the entries the commit would write, without their data.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;

use dcs_protocol::{ExcludedBy, PathSize, Preview, ScanReport};

use crate::layer::archive::{AppendError, Entry, EntryKind, EntrySink};

/// How many of the biggest files and directories a preview lists.
pub const BIGGEST: usize = 20;

#[derive(Debug)]
pub struct Survey {
    preview: Preview,
    biggest_files: Biggest,
    biggest_directories: Biggest,
    /// The directories the walk is in, outermost first, with the bytes of
    /// the files met below each so far. Entries come in walk order, so a
    /// directory is done when an entry outside it arrives.
    open: Vec<(Vec<u8>, u64)>,
}

impl Survey {
    /// A tally for a walk with these exclude patterns in force.
    pub fn new(patterns: &[String]) -> Self {
        let excluded = patterns
            .iter()
            .map(|pattern| ExcludedBy {
                pattern: pattern.clone(),
                entries: 0,
                files: 0,
                bytes: 0,
            })
            .collect();
        Self {
            preview: Preview {
                excluded,
                ..Preview::default()
            },
            biggest_files: Biggest::default(),
            biggest_directories: Biggest::default(),
            open: Vec::new(),
        }
    }

    /// The preview, with the scan's findings.
    pub fn finish(mut self, findings: ScanReport) -> Preview {
        self.close_outside(b"");
        self.preview.biggest_files = self.biggest_files.into_sorted();
        self.preview.biggest_directories = self.biggest_directories.into_sorted();
        self.preview.findings = findings;
        self.preview
    }

    /// Closes the open directories that `path` is not below, crediting
    /// each one's bytes to its parent.
    fn close_outside(&mut self, path: &[u8]) {
        while let Some((dir, _)) = self.open.last() {
            let below = path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/';
            if below {
                break;
            }
            let Some((dir, bytes)) = self.open.pop() else {
                break;
            };
            if let Some((_, parent)) = self.open.last_mut() {
                *parent += bytes;
            }
            self.biggest_directories.offer(bytes, dir);
        }
    }
}

impl EntrySink for Survey {
    fn append(&mut self, entry: &Entry, _data: Option<&mut dyn Read>) -> Result<(), AppendError> {
        self.close_outside(&entry.path);
        let name = entry.path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let preview = &mut self.preview;
        match entry.kind {
            // Whiteouts and opaque markers are empty files by name.
            EntryKind::File if name.starts_with(b".wh.") => preview.whiteouts += 1,
            EntryKind::File => {
                preview.files += 1;
                preview.total_bytes += entry.size;
                if let Some((_, bytes)) = self.open.last_mut() {
                    *bytes += entry.size;
                }
                self.biggest_files.offer(entry.size, entry.path.clone());
            }
            EntryKind::Directory => {
                preview.directories += 1;
                self.open.push((entry.path.clone(), 0));
            }
            EntryKind::HardLink | EntryKind::Symlink => preview.links += 1,
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => preview.other += 1,
        }
        Ok(())
    }

    fn excluded(&mut self, pattern: usize, entry: &Entry, matched: bool) {
        let Some(tally) = self.preview.excluded.get_mut(pattern) else {
            return;
        };
        if matched {
            tally.entries += 1;
        }
        if entry.kind == EntryKind::File {
            tally.files += 1;
            tally.bytes += entry.size;
        }
    }
}

/// The `BIGGEST` largest (bytes, path) offered: a min-heap that drops the
/// smallest (and, among equals, the last path).
#[derive(Debug, Default)]
struct Biggest {
    heap: BinaryHeap<Reverse<(u64, Reverse<Vec<u8>>)>>,
}

impl Biggest {
    fn offer(&mut self, bytes: u64, path: Vec<u8>) {
        self.heap.push(Reverse((bytes, Reverse(path))));
        if self.heap.len() > BIGGEST {
            self.heap.pop();
        }
    }

    /// Biggest first; equal sizes by path.
    fn into_sorted(self) -> Vec<PathSize> {
        let mut all: Vec<(u64, Vec<u8>)> = self
            .heap
            .into_iter()
            .map(|Reverse((bytes, Reverse(path)))| (bytes, path))
            .collect();
        all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        all.into_iter()
            .map(|(bytes, path)| {
                let mut absolute = b"/".to_vec();
                absolute.extend_from_slice(&path);
                PathSize {
                    path: String::from_utf8_lossy(&absolute).into_owned(),
                    bytes,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64) -> Entry {
        let mut entry = Entry::empty(path.as_bytes().to_vec(), kind);
        entry.size = size;
        entry
    }

    #[test]
    fn counts_bytes_and_directory_totals() {
        let mut survey = Survey::new(&["/tmp/*".into(), "*.log".into()]);
        for (path, kind, size) in [
            ("etc", EntryKind::Directory, 0),
            ("etc/.wh.motd", EntryKind::File, 0),
            ("etc/hosts", EntryKind::File, 10),
            ("home", EntryKind::Directory, 0),
            ("home/a", EntryKind::Directory, 0),
            ("home/a/.wh..wh..opq", EntryKind::File, 0),
            ("home/a/big", EntryKind::File, 1000),
            ("home/a/link", EntryKind::HardLink, 0),
            ("home/a/sym", EntryKind::Symlink, 0),
            ("home/b", EntryKind::Directory, 0),
            ("home/b/f", EntryKind::File, 5),
            ("home/fifo", EntryKind::Fifo, 0),
            ("top", EntryKind::File, 1),
        ] {
            survey.append(&entry(path, kind, size), None).unwrap();
        }
        survey.excluded(1, &entry("var/x.log", EntryKind::File, 7), true);
        survey.excluded(0, &entry("tmp/d", EntryKind::Directory, 0), true);
        survey.excluded(0, &entry("tmp/d/f", EntryKind::File, 3), false);
        let preview = survey.finish(ScanReport::default());
        assert_eq!(
            (
                preview.files,
                preview.directories,
                preview.whiteouts,
                preview.links,
                preview.other,
                preview.total_bytes
            ),
            (4, 4, 2, 2, 1, 1016)
        );
        let dirs: Vec<_> = preview
            .biggest_directories
            .iter()
            .map(|d| (d.path.as_str(), d.bytes))
            .collect();
        assert_eq!(
            dirs,
            [
                ("/home", 1005),
                ("/home/a", 1000),
                ("/etc", 10),
                ("/home/b", 5)
            ]
        );
        assert_eq!(preview.biggest_files[0].path, "/home/a/big");
        let excluded: Vec<_> = preview
            .excluded
            .iter()
            .map(|e| (e.pattern.as_str(), e.entries, e.files, e.bytes))
            .collect();
        assert_eq!(excluded, [("/tmp/*", 1, 1, 3), ("*.log", 1, 1, 7)]);
    }

    #[test]
    fn only_the_biggest_are_kept() {
        let mut survey = Survey::new(&[]);
        for i in 0..1000u64 {
            let path = format!("f{i:04}");
            survey
                .append(&entry(&path, EntryKind::File, i % 100), None)
                .unwrap();
        }
        let preview = survey.finish(ScanReport::default());
        assert_eq!(preview.biggest_files.len(), BIGGEST);
        assert!(
            preview
                .biggest_files
                .iter()
                .all(|f| f.bytes == 99 || f.bytes == 98)
        );
        assert_eq!(preview.biggest_files[0].path, "/f0099");
        assert_eq!(preview.files, 1000);
    }
}
