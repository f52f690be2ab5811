//! GraphQL types of `previewSnapshot`: what a snapshot of a desktop would
//! hold now.

use async_graphql::{Object, SimpleObject};
use dcs_protocol::Preview;

use super::findings::FindingReport;
use super::int64::Int64;

/// Byte counts travel as u64; `Int64` is signed.
fn bytes(n: u64) -> Int64 {
    Int64(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Counts of entries travel as u64; a desktop holds far fewer than `Int`'s
/// 2^31 (a count beyond it reads as 2147483647).
fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A path and the bytes of the regular files at or below it.
#[derive(SimpleObject, Debug)]
pub struct PathSize {
    /// Absolute path in the container.
    pub path: String,
    /// Bytes of the regular files' contents.
    pub bytes: Int64,
}

impl From<&dcs_protocol::PathSize> for PathSize {
    fn from(p: &dcs_protocol::PathSize) -> Self {
        Self {
            path: p.path.clone(),
            bytes: bytes(p.bytes),
        }
    }
}

/// What one exclude pattern keeps out of the snapshot.
#[derive(SimpleObject, Debug)]
pub struct ExcludedBy {
    /// The pattern, as given or as a default of the agent (`/tmp/*`, ...).
    pub pattern: String,
    /// Entries it matched (a matched directory counts once).
    pub entries: i32,
    /// Regular files left out, those below matched directories included.
    pub files: i32,
    /// Bytes of those files.
    pub bytes: Int64,
}

impl From<&dcs_protocol::ExcludedBy> for ExcludedBy {
    fn from(e: &dcs_protocol::ExcludedBy) -> Self {
        Self {
            pattern: e.pattern.clone(),
            entries: count(e.entries),
            files: count(e.files),
            bytes: bytes(e.bytes),
        }
    }
}

/// What a snapshot of the desktop would hold if it were taken now (the
/// same walk and excludes as the commit, nothing paused or written), and
/// what the secret scan finds in it.
#[derive(Debug)]
pub struct SnapshotPreview(pub Preview);

/// What a snapshot of the desktop would hold if it were taken now, and
/// what the secret scan finds in it.
#[Object]
impl SnapshotPreview {
    /// Regular files (each once; its further hard-linked names are `links`).
    async fn files(&self) -> i32 {
        count(self.0.files)
    }
    /// Directories, new or changed.
    async fn directories(&self) -> i32 {
        count(self.0.directories)
    }
    /// Files and directories of the image that the change deletes.
    async fn whiteouts(&self) -> i32 {
        count(self.0.whiteouts)
    }
    /// Symbolic links and further names of hard-linked files.
    async fn links(&self) -> i32 {
        count(self.0.links)
    }
    /// Devices and FIFOs.
    async fn other(&self) -> i32 {
        count(self.0.other)
    }
    /// Bytes of the regular files' contents, before compression.
    async fn total_bytes(&self) -> Int64 {
        bytes(self.0.total_bytes)
    }
    /// The 20 biggest files, biggest first.
    async fn biggest_files(&self) -> Vec<PathSize> {
        self.0.biggest_files.iter().map(PathSize::from).collect()
    }
    /// The 20 directories with the most bytes below them, biggest first.
    async fn biggest_directories(&self) -> Vec<PathSize> {
        self.0
            .biggest_directories
            .iter()
            .map(PathSize::from)
            .collect()
    }
    /// One entry per exclude pattern in force (the agent's defaults and the
    /// request's), in the order they apply.
    async fn excluded(&self) -> Vec<ExcludedBy> {
        self.0.excluded.iter().map(ExcludedBy::from).collect()
    }
    /// What the secret scan finds: a snapshot taken now fails with
    /// `SECRETS_FOUND` while a `SECRET` here is neither acknowledged nor
    /// excluded.
    async fn findings(&self) -> FindingReport {
        FindingReport::here(self.0.findings.clone())
    }
}
