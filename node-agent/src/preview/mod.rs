//! Look before you push: what a snapshot of a container would hold now,
//! and what the secret scan finds in it, without writing anything.
//!
//! A preview is the commit's own overlay walk in its preview mode (see
//! `layer::overlay::WalkMode::Preview`): same excludes, same descriptors
//! that never follow a link, same scan. It writes no tar, does not pause
//! the desktop, and opens no file except those whose head the scan reads
//! (at most `scan::HEAD_BYTES` each, and only the first 8 KiB of a binary
//! one). So it finds what the commit would find, at the cost of a walk.
//!
//! Only the overlay snapshotter's upper directory can be read this way:
//! other snapshotters go through containerd's Diff service, which reads
//! by path and may only read a paused desktop.

pub mod survey;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dcs_protocol::Preview;

use crate::containerd::{self, Containerd};
use crate::layer::exclude::ExcludeError;
use crate::layer::overlay::{self, WalkMode};
use crate::layer::{Excludes, LayerError, OverlayUpper};
use crate::scan::Scanner;
use survey::Survey;

/// Which container, and the excludes a commit of it would apply.
#[derive(Debug, Clone)]
pub struct PreviewRequest {
    pub container_id: String,
    pub excludes: Vec<String>,
    pub default_excludes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error(transparent)]
    Containerd(#[from] containerd::Error),
    #[error(transparent)]
    Exclude(#[from] ExcludeError),
    /// The container's changes are not one overlay upper directory.
    #[error(
        "container \"{id}\" uses snapshotter \"{snapshotter}\": previews read the overlay \
         snapshotter's upper directory only"
    )]
    Unsupported { id: String, snapshotter: String },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("the preview was interrupted: {0}")]
    Interrupted(String),
}

impl PreviewError {
    pub fn is_container_not_found(&self) -> bool {
        matches!(
            self,
            Self::Containerd(containerd::Error::ContainerNotFound { .. })
        )
    }

    /// The container is there but cannot be previewed (snapshotter, or an
    /// overlay feature only the Diff service reads).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Self::Unsupported { .. } | Self::Layer(LayerError::OverlayFeature { .. })
        )
    }
}

/// Previews a container's changes. Dropping the future stops the walk at
/// its next entry.
pub async fn preview(
    client: &Containerd,
    request: &PreviewRequest,
) -> Result<Preview, PreviewError> {
    let excludes = Excludes::new(&request.excludes, request.default_excludes)?;
    let container = client.container(&request.container_id).await?;
    let unsupported = || PreviewError::Unsupported {
        id: container.id.clone(),
        snapshotter: container.snapshotter.clone(),
    };
    if container.snapshot_key.is_empty() {
        return Err(unsupported());
    }
    let mounts = client
        .snapshot_mounts(&container.snapshotter, &container.snapshot_key)
        .await?;
    let upper = match mounts.as_slice() {
        [mount] => OverlayUpper::from_mount(&mount.r#type, &mount.options),
        _ => None,
    }
    .ok_or_else(unsupported)?;
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = stop.0.clone();
    tokio::task::spawn_blocking(move || survey_upper(&upper, &excludes, &flag))
        .await
        .map_err(|e| PreviewError::Interrupted(e.to_string()))?
        .map_err(PreviewError::from)
}

/// The walk itself, on the calling thread: stops when `stop` is set.
pub fn survey_upper(
    upper: &OverlayUpper,
    excludes: &Excludes,
    stop: &AtomicBool,
) -> Result<Preview, LayerError> {
    let mut survey = Survey::new(excludes.patterns());
    let mut scanner = Scanner::new();
    overlay::write_changes_with(
        upper,
        excludes,
        WalkMode::Preview(stop),
        &mut scanner,
        &mut survey,
    )?;
    // What the scan read, beside what the walk saw: the figures of the
    // clean-corpus test and of the benchmark.
    tracing::info!(
        files_read = scanner.volume.files,
        bytes_read = scanner.volume.bytes,
        "secret scan read"
    );
    Ok(survey.finish(scanner.finish().into_report()))
}

/// Sets the flag when the preview's future goes away, so the walk on its
/// blocking thread stops too.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
