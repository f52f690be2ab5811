//! Building a layer: tar the container's changes, compress, and hash both
//! forms, as one stream. Nothing holds a whole layer: memory use is a few
//! buffers, whatever the size of the change.

pub mod archive;
pub mod compress;
pub mod digest;
pub mod exclude;
pub mod filter;
pub mod layer_dirs;
pub mod overlay;
pub mod pgzip;
pub mod pinned;
pub mod record;
#[cfg(test)]
mod two_pass_tests;
pub mod xattr;

use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use archive::{AppendError, TarWriter};
pub use compress::Compression;
use compress::Compressor;
use digest::DigestWriter;

use crate::scan::{Findings, Scanner};
pub use exclude::Excludes;
pub use overlay::{OverlayUpper, WalkStats};
pub use record::Record;

/// Buffer between the tar writer and the hashing/compressing stages, so
/// 512-byte headers do not each go through them.
const TAR_BUFFER: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write the layer: {0}")]
    Write(io::Error),

    #[error("cannot read containerd's diff of the container: {0}")]
    DiffStream(io::Error),

    /// The upper directory uses an overlay feature whose files are not all
    /// in the upper directory; the caller falls back to the Diff service.
    #[error("the overlay upper directory uses {feature} (at {})", path.display())]
    OverlayFeature {
        path: PathBuf,
        feature: &'static str,
    },

    /// A preview whose caller went away.
    #[error("the preview was abandoned")]
    Abandoned,
}

impl LayerError {
    fn from_append(error: AppendError, path: &Path) -> Self {
        match error {
            AppendError::Read(source) => Self::Read {
                path: path.to_path_buf(),
                source,
            },
            AppendError::Write(e) => Self::Write(e),
        }
    }
}

/// Where the layer's entries come from.
pub enum LayerSource {
    /// An overlay upper directory: the fast path, in one pass.
    Overlay(OverlayUpper),
    /// An overlay upper directory, one of the two passes of a commit that
    /// reads while the desktop runs (see `record`).
    OverlayPass(OverlayUpper, Pass, Box<Record>),
    /// An uncompressed layer tar (from containerd's Diff service), to be
    /// filtered and recompressed, with the hardlink plan of a first pass
    /// and where the extended attributes the tar lacks come from.
    Tar(Box<dyn Read + Send>, filter::Promotions, filter::TarXattrs),
}

impl fmt::Debug for LayerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlay(upper) => f.debug_tuple("Overlay").field(upper).finish(),
            Self::OverlayPass(upper, pass, _) => f
                .debug_tuple("OverlayPass")
                .field(upper)
                .field(pass)
                .finish_non_exhaustive(),
            Self::Tar(..) => f.debug_tuple("Tar").finish_non_exhaustive(),
        }
    }
}

/// Which pass of a commit that reads while the desktop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Everything, while the desktop runs; fills the record.
    Bulk,
    /// While paused: what changed since the bulk pass.
    Delta,
}

/// The layer that was written.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerSummary {
    /// Digest of the compressed blob.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Size of the compressed blob.
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: String,
    pub stats: WalkStats,
    /// What the secret scan found in this layer.
    #[serde(skip)]
    pub findings: Findings,
    /// The record of an `OverlayPass`, handed back for the next pass.
    #[serde(skip)]
    pub record: Option<Box<Record>>,
}

/// Writes the layer from `source` to `out`, compressed; returns what was
/// written and `out`.
pub fn write_layer<W: Write>(
    source: LayerSource,
    excludes: &Excludes,
    compression: Compression,
    out: W,
) -> Result<(LayerSummary, W), LayerError> {
    let compressed = DigestWriter::new(out);
    let compressor = Compressor::new(compression, compressed).map_err(LayerError::Write)?;
    let uncompressed = DigestWriter::new(compressor);
    let mut tar = TarWriter::new(BufWriter::with_capacity(TAR_BUFFER, uncompressed));

    let mut record = None;
    let mut scanner = Scanner::new();
    let stats = match source {
        LayerSource::Overlay(upper) => {
            overlay::write_changes(&upper, excludes, &mut scanner, &mut tar)?
        }
        LayerSource::OverlayPass(upper, pass, mut recorded) => {
            let mode = match pass {
                Pass::Bulk => overlay::WalkMode::Bulk(&mut recorded),
                Pass::Delta => overlay::WalkMode::Delta(&mut recorded),
            };
            let stats =
                overlay::write_changes_with(&upper, excludes, mode, &mut scanner, &mut tar)?;
            record = Some(recorded);
            stats
        }
        LayerSource::Tar(reader, promotions, xattrs) => filter::copy_filtered(
            reader,
            excludes,
            &promotions,
            &xattrs,
            &mut scanner,
            &mut tar,
        )?,
    };
    tracing::debug!(
        files = scanner.volume.files,
        bytes = scanner.volume.bytes,
        "secret scan read"
    );
    let findings = scanner.finish();

    let buffered = tar.finish().map_err(LayerError::Write)?;
    let uncompressed = buffered
        .into_inner()
        .map_err(|e| LayerError::Write(e.into_error()))?;
    let (compressor, diff_id, uncompressed_size) =
        uncompressed.finish().map_err(LayerError::Write)?;
    let compressed = compressor.finish().map_err(LayerError::Write)?;
    let (out, digest, size) = compressed.finish().map_err(LayerError::Write)?;
    Ok((
        LayerSummary {
            digest,
            diff_id,
            size,
            uncompressed_size,
            media_type: compress::layer_media_type(compression).to_string(),
            stats,
            findings,
            record,
        },
        out,
    ))
}
