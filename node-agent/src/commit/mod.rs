//! The commit engine: a container's changes become a new image in a
//! registry (and in containerd on this node, with `--local-image`).
//!
//! Order matters for safety:
//! 1. everything is checked that can be checked before touching anything
//!    (reference, exclusions, credentials file, spool, container, base
//!    image);
//! 2. new layers wait for the push in the agent's spool (`crate::spool`),
//!    or with `--local-image` in containerd; all content written into
//!    containerd is written under a lease, so its garbage collector cannot
//!    take it half-way and a crash leaves nothing pinned;
//! 3. the task is paused (if asked) only while the change is read; always
//!    when containerd's Diff service reads it (it follows links by path);
//! 4. the registry gets its blobs first and the manifest last;
//! 5. with `--local-image`, the image is named in containerd once the
//!    registry has it.

mod flush;
mod lease;
mod on_drop;
mod paused;
mod sink;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use dcs_protocol::reference::Target;
use dcs_protocol::{Acknowledgement, CommitMethod, ScanReport};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::containerd::{self, Containerd, Lease, TaskState};
use crate::image::base::{BaseImage, BaseImageError};
use crate::image::build::{BuiltImage, CommitOptions, NewLayer, build_image};
use crate::image::changes::ConfigChange;
use crate::image::flatten::{FlattenBase, FlattenError, WantedBase};
use crate::image::{Descriptor, media_type};
use crate::layer::exclude::ExcludeError;
use crate::layer::filter::{self, TarXattrs};
use crate::layer::layer_dirs::LayerDirs;
use crate::layer::{
    Compression, Excludes, LayerError, LayerSource, LayerSummary, OverlayUpper, Pass, Record,
    WalkStats, write_layer,
};
use crate::lock::{LockError, lock_container};
use crate::registry::upload::{StreamingUpload, UploadTee};
use crate::registry::{self, PushReport, Pusher, RegistryError, RegistryOptions};
use crate::scan::{Blocking, Findings};
use crate::spool::{Spool, SpoolError, SpoolWriter, SpooledBlob};
use flush::IngestFlusher;
use lease::LeaseGuard;
pub use lease::recover_interrupted_commits;
use on_drop::StopOnDrop;
use paused::{PausedTask, ReadPause};
use sink::{ChannelReader, ContentSink, Store};

#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub container_id: String,
    /// The tag to create, e.g. `registry.example/workshops/k8s-intro:v2`.
    /// Where to push: parsed once, by whoever took the request (the API
    /// for jobs, the command line otherwise), and pushed exactly as it is.
    pub target: Target,
    pub compression: Compression,
    /// Pause the container's task while its changes are read, for a
    /// consistent layer.
    pub pause: bool,
    /// Request globs, on top of the defaults unless those are turned off.
    pub excludes: Vec<String>,
    pub default_excludes: bool,
    pub changes: Vec<ConfigChange>,
    pub message: Option<String>,
    /// Recorded as a manifest annotation, for lineage.
    pub snapshot_id: Option<String>,
    pub registry: RegistryOptions,
    /// Where the per-container lock files live.
    pub state_dir: PathBuf,
    /// Where new layers are kept until pushed, unless `local_image`.
    pub spool_dir: PathBuf,
    /// Also keep the image in containerd on this node: its new layers in
    /// the content store, named by the target (see `crate::spool`).
    pub local_image: bool,
    /// Secret findings (rule and path) the speaker accepts; any other
    /// secret the scan finds refuses the commit before anything is pushed.
    pub acknowledged: Vec<Acknowledgement>,
    /// Flatten onto this base: its layers plus one layer with everything
    /// above them (see `image::flatten`).
    pub flatten: Option<WantedBase>,
    /// Make exactly one new layer: no second layer for what changed while
    /// the bulk was read (the layer budget has room for one).
    pub single_layer: bool,
}

/// What a commit produced; printed as JSON by the CLI.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitResult {
    pub image: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer: LayerReport,
    /// What changed while the bulk was read, written while paused: a
    /// second layer on top of `layer` (see `read_while_running`); `None`
    /// when nothing changed, so an idle desktop gets one layer.
    pub delta_layer: Option<LayerReport>,
    /// How long the desktop was paused.
    pub paused_ms: u64,
    /// How long the change was read while the desktop ran, before the pause.
    pub prepare_ms: u64,
    pub duration_ms: u64,
    pub diff_ms: u64,
    pub push_ms: u64,
    pub base_image: String,
    pub base_digest: String,
    /// `overlay` (upper directory read directly) or `diff-service`.
    pub method: CommitMethod,
    pub stats: WalkStats,
    /// What the delta layer holds, when there is one.
    pub delta_stats: Option<WalkStats>,
    pub push: PushReport,
    /// What the secret scan found in the pushed layers: acknowledged
    /// secrets and warnings.
    pub findings: ScanReport,
    /// Layers in the pushed image.
    pub layer_count: usize,
    /// Layers in the image the container ran.
    pub base_layer_count: usize,
    /// The image is the flatten base's layers plus one.
    pub flattened: bool,
    /// How many layers of the running image the one new layer replaced
    /// (0 when the container ran the flatten base itself).
    pub layers_merged: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: String,
}

impl LayerReport {
    fn of(summary: &LayerSummary) -> Self {
        Self {
            digest: summary.digest.clone(),
            diff_id: summary.diff_id.clone(),
            size: summary.size,
            uncompressed_size: summary.uncompressed_size,
            media_type: summary.media_type.clone(),
        }
    }

    fn new_layer(&self) -> NewLayer {
        NewLayer {
            descriptor: Descriptor {
                media_type: self.media_type.clone(),
                digest: self.digest.clone(),
                size: self.size as i64,
                annotations: Default::default(),
                platform: None,
            },
            diff_id: self.diff_id.clone(),
        }
    }
}

/// Phases reported while a commit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommitProgress {
    Diffing,
    Pushing {
        done: u64,
        total: u64,
    },
    /// Every blob is in the registry and the manifest, which writes the
    /// tag, goes next: from here on the commit is not stopped by a cancel
    /// (dropped mid-request, the tag may still be written, and the snapshot
    /// would say CANCELLED with its image in the registry).
    Tagging,
}

pub type ProgressSink = Arc<dyn Fn(CommitProgress) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Containerd(#[from] containerd::Error),
    #[error(transparent)]
    BaseImage(#[from] BaseImageError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Exclude(#[from] ExcludeError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("container \"{id}\" uses snapshotter \"{snapshotter}\" and has no snapshot to read")]
    NoSnapshot { id: String, snapshotter: String },
    #[error("the commit was interrupted: {0}")]
    Interrupted(String),
    #[error("{0}")]
    SecretsFound(Box<Refusal>),
}

/// A commit the secret scan stopped: nothing was pushed.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The whole scan: the blocking secrets, acknowledged ones, warnings.
    pub report: ScanReport,
    pub blocking: Blocking,
}

/// How many blocking findings the sentence names; the report has them all.
const NAMED_IN_SENTENCE: usize = 5;

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.blocking.count();
        let noun = if count == 1 { "secret" } else { "secrets" };
        write!(
            f,
            "{count} {noun} found and neither acknowledged nor excluded: "
        )?;
        let named: Vec<String> = self
            .blocking
            .listed
            .iter()
            .take(NAMED_IN_SENTENCE)
            .map(|finding| match finding.line {
                Some(line) => format!("{}:{line}: {}", finding.path, finding.rule),
                None => format!("{}: {}", finding.path, finding.rule),
            })
            .collect();
        f.write_str(&named.join(", "))?;
        let more = count - named.len() as u64;
        if more > 0 {
            write!(f, " and {more} more")?;
        }
        f.write_str(
            "; nothing was pushed (acknowledge each by rule and path, or exclude the paths)",
        )
    }
}

/// Commits a container and pushes the image.
pub async fn commit(
    client: &Containerd,
    request: &CommitRequest,
    progress: Option<ProgressSink>,
) -> Result<CommitResult, CommitError> {
    let started = Instant::now();
    let target = registry::target_reference(&request.target);
    let excludes = Excludes::new(&request.excludes, request.default_excludes)?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request checked"
    );
    let pusher = Pusher::new(target.clone(), &request.registry)?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "registry client ready"
    );
    let _lock = lock_container(
        &request.state_dir,
        client.namespace(),
        &request.container_id,
    )?;

    let container = client.container(&request.container_id).await?;
    let base = BaseImage::resolve(client, &container.id, &container.image).await?;
    let flatten = match &request.flatten {
        Some(wanted) if !container.snapshot_key.is_empty() => {
            let parent = client
                .snapshot_parent(&container.snapshotter, &container.snapshot_key)
                .await?;
            Some(FlattenBase::resolve(client, &base, &parent, wanted, &request.registry).await?)
        }
        _ => None,
    };
    // Credentials and reachability first: a refusal must not cost a pause
    // and a layer build.
    pusher.check_access(&base.manifest.config.digest).await?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "base image resolved, registry reachable"
    );
    if container.snapshot_key.is_empty() {
        return Err(CommitError::NoSnapshot {
            id: container.id.clone(),
            snapshotter: container.snapshotter.clone(),
        });
    }

    let spool = if request.local_image {
        None
    } else {
        Some(Spool::open(&request.spool_dir)?)
    };

    let lease = LeaseGuard::create(client, &container.id).await?;
    let keep = Keep {
        lease: lease.lease(),
        spool: spool.as_ref(),
        pusher: &pusher,
    };
    let outcome = commit_under_lease(
        client,
        request,
        &container,
        &base,
        flatten.as_ref(),
        &excludes,
        keep,
        progress,
    )
    .await;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "commit done under lease"
    );
    // The image record now holds what must stay; the rest may go.
    lease.release().await;
    let mut result = outcome?;
    result.image = registry::image_name(&target);
    result.duration_ms = started.elapsed().as_millis() as u64;
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
async fn commit_under_lease(
    client: &Containerd,
    request: &CommitRequest,
    container: &containerd::ContainerInfo,
    base: &BaseImage,
    flatten: Option<&FlattenBase>,
    excludes: &Excludes,
    keep: Keep<'_>,
    progress: Option<ProgressSink>,
) -> Result<CommitResult, CommitError> {
    if let Some(progress) = &progress {
        progress(CommitProgress::Diffing);
    }
    let diff_started = Instant::now();
    let pause = request.pause && client.task_state(&container.id).await? == TaskState::Running;
    tracing::debug!(pause, "task state read");
    // A flatten whose base is below the running image merges layers: one
    // diff from the base's snapshot. On the base itself, it is a commit
    // of one layer.
    let merged = flatten.filter(|f| f.layers < base.manifest.layers.len());
    let one_layer = request.single_layer || flatten.is_some();
    let upper = overlay_upper(client, container).await?;
    let read = match (merged, upper) {
        (Some(flatten), _) => {
            let lower = Lower::Snapshot(flatten.chain_id.clone());
            read_in_one_pass(client, container, excludes, request, keep, lower, pause).await?
        }
        // The desktop keeps running while the bulk is read.
        (None, Some(upper)) if pause => {
            let layering = if one_layer {
                Layering::OneLayer
            } else {
                Layering::from_env()
            };
            read_while_running(client, container, upper, excludes, request, keep, layering).await?
        }
        _ => {
            read_in_one_pass(
                client,
                container,
                excludes,
                request,
                keep,
                Lower::Image,
                pause,
            )
            .await?
        }
    };
    let diff_ms = diff_started.elapsed().as_millis() as u64;
    // Look before you push: the scan ran as the layers were built. A bulk
    // layer may already be streaming to the registry; its session is
    // cancelled and nothing else goes out.
    let blocking = read.findings.blocking(&request.acknowledged);
    if !blocking.is_empty() {
        if let Some((upload, tee)) = read.upload {
            upload.cancel(tee).await;
        }
        return Err(CommitError::SecretsFound(Box::new(Refusal {
            report: read.findings.into_report(),
            blocking,
        })));
    }
    let push_started = Instant::now();
    let push_span = tracing::debug_span!("commit.push");
    let streamed = match read.upload {
        Some((upload, tee)) => upload
            .finish(&read.layers[0].digest, tee)
            .instrument(push_span.clone())
            .await
            .unwrap_or(false),
        None => false,
    };
    tracing::debug!(streamed, "streaming layer upload");

    let new_layers: Vec<NewLayer> = read.layers.iter().map(LayerReport::new_layer).collect();
    let layers_merged = merged.map_or(0, |f| base.manifest.layers.len() - f.layers);
    let options = CommitOptions {
        changes: request.changes.clone(),
        message: request.message.clone(),
        snapshot_id: request.snapshot_id.clone(),
        layers_merged,
    };
    // Named as the flatten base even when nothing was merged (a desktop
    // that runs the base itself, whose tag may name another config).
    let built = match flatten {
        Some(flatten) => build_image(
            &flatten.cut(base),
            &new_layers,
            &options,
            chrono::Utc::now(),
        ),
        None => build_image(base, &new_layers, &options, chrono::Utc::now()),
    };
    if keep.spool.is_none() {
        write_documents(client, keep.lease, &built).await?;
    }

    let push_progress = progress.clone().map(|p| {
        Arc::new(move |done, total| p(CommitProgress::Pushing { done, total }))
            as registry::ProgressFn
    });
    keep.pusher
        .set_content_dir(content_dir(client, container).await);
    let mut push = keep
        .pusher
        .push_blobs(client, &built, &base.name, push_progress)
        .instrument(push_span)
        .await?;
    if let Some(progress) = &progress {
        progress(CommitProgress::Tagging);
    }
    let manifest_span = tracing::debug_span!("commit.manifest");
    keep.pusher
        .put_manifest(&built)
        .instrument(manifest_span.clone())
        .await?;
    push.layer_streamed = streamed;
    // Named only once the registry has it: a failed push leaves no local
    // tag either, and the lease lets the unreferenced content go.
    if keep.spool.is_none() {
        let name = registry::image_name(&registry::target_reference(&request.target));
        client
            .put_image(&name, &built.manifest_descriptor, HashMap::new())
            .instrument(manifest_span)
            .await?;
    }

    let mut layers = read.layers.into_iter();
    let layer = layers
        .next()
        .ok_or_else(|| CommitError::Interrupted("the commit produced no layer".to_string()))?;
    Ok(CommitResult {
        image: String::new(),
        manifest_digest: built.manifest_descriptor.digest.clone(),
        config_digest: built.config_descriptor.digest.clone(),
        layer,
        delta_layer: layers.next(),
        paused_ms: read.paused_ms,
        prepare_ms: read.prepare_ms,
        duration_ms: 0,
        diff_ms,
        push_ms: push_started.elapsed().as_millis() as u64,
        base_image: base.name.clone(),
        base_digest: base.manifest_descriptor.digest.clone(),
        method: read.method,
        stats: read.stats,
        delta_stats: read.delta_stats,
        push,
        findings: read.findings.into_report(),
        layer_count: built.layers.len(),
        base_layer_count: base.manifest.layers.len(),
        flattened: flatten.is_some(),
        layers_merged,
    })
}

/// The new layers as read, before the image is built and pushed.
struct ReadLayers {
    /// The layer, or the bulk layer and the delta on top of it.
    layers: Vec<LayerReport>,
    method: CommitMethod,
    stats: WalkStats,
    delta_stats: Option<WalkStats>,
    paused_ms: u64,
    prepare_ms: u64,
    /// The streaming upload of `layers[0]`, to finish.
    upload: Option<(StreamingUpload, Option<UploadTee>)>,
    /// The secret scan of all `layers`.
    findings: Findings,
}

/// Where a commit's new content goes.
#[derive(Clone, Copy)]
struct Keep<'a> {
    /// What the commit writes into containerd lives under it: the Diff
    /// service's output, and with `--local-image` the new layers and image.
    lease: &'a Lease,
    /// The agent's spool for the new layers; `None` with `--local-image`
    /// (containerd's content store keeps them, and the image is named there).
    spool: Option<&'a Spool>,
    pusher: &'a Pusher,
}

/// When something changed while the bulk was read: a small second layer
/// (the default), or one layer read again whole while paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layering {
    Delta,
    OneLayer,
}

impl Layering {
    /// `DCS_ONE_LAYER=1` (or `true`) asks for one layer always.
    pub fn from_env() -> Self {
        match std::env::var("DCS_ONE_LAYER").as_deref() {
            Ok("1" | "true") => Self::OneLayer,
            _ => Self::Delta,
        }
    }
}

/// The overlay upper directory of the container, when its snapshot is
/// one overlay mount.
async fn overlay_upper(
    client: &Containerd,
    container: &containerd::ContainerInfo,
) -> Result<Option<OverlayUpper>, CommitError> {
    let mounts = client
        .snapshot_mounts(&container.snapshotter, &container.snapshot_key)
        .await?;
    Ok(match mounts.as_slice() {
        [mount] => OverlayUpper::from_mount(&mount.r#type, &mount.options),
        _ => None,
    })
}

/// A paused commit on the overlay fast path, with a pause that does not
/// grow with the change:
/// 1. the bulk pass reads and writes everything while the desktop runs
///    (streamed to the registry as it is compressed), recording what it saw;
/// 2. the desktop is paused; the delta pass walks the metadata only, and
///    reads again what changed since the bulk pass saw it (see
///    `layer::record`); whiteouts for what is gone;
/// 3. the desktop resumes.
///
/// The image is base + bulk + delta, which equals the file system at the
/// pause. An idle desktop's delta is empty and is left out. With
/// `Layering::OneLayer`, a non-empty delta makes the commit read everything
/// again while paused (the old, long pause; only when something changed).
#[allow(clippy::too_many_arguments)]
async fn read_while_running(
    client: &Containerd,
    container: &containerd::ContainerInfo,
    upper: OverlayUpper,
    excludes: &Excludes,
    request: &CommitRequest,
    keep: Keep<'_>,
    layering: Layering,
) -> Result<ReadLayers, CommitError> {
    let prepare_started = Instant::now();
    let upload = keep.pusher.start_streaming_upload().await;
    // Nothing is paused during the bulk read: it may wait for the registry.
    let mut tee = upload.as_ref().and_then(|u| u.tee(true));
    let bulk_source =
        LayerSource::OverlayPass(upper.clone(), Pass::Bulk, Box::new(Record::starting_now()));
    let mut bulk = match build_layer(
        client,
        bulk_source,
        excludes,
        request.compression,
        keep,
        &mut tee,
    )
    .instrument(tracing::debug_span!("commit.bulk_read"))
    .await
    {
        Ok(bulk) => bulk,
        Err(CommitError::Layer(LayerError::OverlayFeature { path, feature })) => {
            tracing::info!(path = %path.display(), feature, "overlay feature found; using the Diff service");
            if let Some(upload) = upload {
                upload.cancel(tee).await;
            }
            return read_in_one_pass(
                client,
                container,
                excludes,
                request,
                keep,
                Lower::Image,
                true,
            )
            .await;
        }
        Err(e) => return Err(e),
    };
    let prepare_ms = prepare_started.elapsed().as_millis() as u64;
    let record = bulk.record.take();
    tracing::debug!(
        prepare_ms,
        entries = record.as_ref().map_or(0, |r| r.len()),
        "bulk layer read while running"
    );

    // The pause as one span, from freeze to thaw, the reads inside it.
    let pause_span = tracing::debug_span!("commit.pause");
    let paused = PausedTask::pause(client, &container.id)
        .instrument(pause_span.clone())
        .await?;
    // `None`: the record gave up (too many entries to remember).
    let delta = match record {
        Some(record) if !record.overflowed() => {
            let source = LayerSource::OverlayPass(upper.clone(), Pass::Delta, record);
            Some(
                build_layer(
                    client,
                    source,
                    excludes,
                    request.compression,
                    keep,
                    &mut None,
                )
                .instrument(tracing::debug_span!(parent: &pause_span, "commit.delta"))
                .await,
            )
        }
        _ => None,
    };
    let redo = match &delta {
        None => true,
        Some(Ok(delta)) => delta.stats.entries > 0 && layering == Layering::OneLayer,
        Some(Err(_)) => false,
    };
    // A delta the image will not have lets its spool file go now: before
    // the whole change is read again into the spool, or once it is known
    // to be empty.
    if let Some(Ok(delta)) = &delta {
        let used = !redo && delta.stats.entries > 0;
        if let Some(unused) = unused_delta(&bulk.digest, &delta.digest, used) {
            keep.pusher.forget_spooled(unused);
        }
    }
    let whole = if redo {
        tracing::info!("reading the change again while paused, for one layer");
        let source = LayerSource::Overlay(upper);
        Some(
            build_layer(
                client,
                source,
                excludes,
                request.compression,
                keep,
                &mut None,
            )
            .instrument(tracing::debug_span!(parent: &pause_span, "commit.reread"))
            .await,
        )
    } else {
        None
    };
    // Resume even when reading failed: a speaker's desktop must never stay
    // frozen because of a failed snapshot.
    let (resumed, held) = paused.resume().instrument(pause_span.clone()).await;
    drop(pause_span);
    resumed?;
    let paused_ms = held.as_millis() as u64;

    if let Some(whole) = whole {
        let whole = whole?;
        // The streamed bulk layer is not part of the image: cancel it.
        if let Some(upload) = upload {
            upload.cancel(tee).await;
        }
        // Its spool file goes too, unless the layer read again is the same
        // (an unchanged desktop): the spool then holds it under that digest.
        if bulk.digest != whole.digest {
            keep.pusher.forget_spooled(&bulk.digest);
        }
        return Ok(ReadLayers {
            layers: vec![LayerReport::of(&whole)],
            method: CommitMethod::Overlay,
            stats: whole.stats,
            delta_stats: None,
            paused_ms,
            prepare_ms,
            upload: None,
            findings: whole.findings,
        });
    }
    let Some(delta) = delta else {
        return Err(CommitError::Interrupted("no delta layer".to_string()));
    };
    let delta = delta?;
    let mut layers = vec![LayerReport::of(&bulk)];
    let mut delta_stats = None;
    // Both layers are pushed: a secret either pass saw is published (one
    // the desktop deleted during the read is still in the bulk layer).
    let mut findings = std::mem::take(&mut bulk.findings);
    if delta.stats.entries > 0 {
        layers.push(LayerReport::of(&delta));
        delta_stats = Some(delta.stats);
        findings.merge(delta.findings);
    }
    Ok(ReadLayers {
        layers,
        method: CommitMethod::Overlay,
        stats: bulk.stats,
        delta_stats,
        paused_ms,
        prepare_ms,
        upload: upload.map(|u| (u, tee)),
        findings,
    })
}

/// The spooled delta to let go, if the image will not use it. The spool
/// keeps layers by digest: a delta that equals the bulk layer (both empty:
/// an idle desktop) is the bulk layer's entry too, which stays.
fn unused_delta<'a>(bulk: &str, delta: &'a str, used: bool) -> Option<&'a str> {
    (!used && delta != bulk).then_some(delta)
}

/// One pass over the change: unpaused (`--no-pause`, or a task that is not
/// running), or paused while the container is read (the Diff service,
/// which reads by path, is always paused; its layer is then compressed
/// after the desktop resumes, see `diff_service_layer`).
#[allow(clippy::too_many_arguments)]
async fn read_in_one_pass(
    client: &Containerd,
    container: &containerd::ContainerInfo,
    excludes: &Excludes,
    request: &CommitRequest,
    keep: Keep<'_>,
    lower: Lower,
    pause: bool,
) -> Result<ReadLayers, CommitError> {
    // A paused read has the pause as its span, from freeze to thaw.
    let read_span = if pause {
        tracing::debug_span!("commit.pause", one_pass = true)
    } else {
        tracing::debug_span!("commit.read", one_pass = true)
    };
    let mut paused = ReadPause::default();
    if pause {
        paused.hold(
            PausedTask::pause(client, &container.id)
                .instrument(read_span.clone())
                .await?,
        );
    }
    // The layer's upload starts with its first compressed bytes, unless
    // that would lengthen the pause, which must cover the reading only: on
    // two cores gzip leaves no CPU for the upload (measured: pause 1.24 s
    // -> 1.51 s for 200 MB), zstd does (0.92 s -> 0.88 s), so a paused gzip
    // commit pushes after the build.
    let overlap = !pause || request.compression == Compression::Zstd;
    let upload = if overlap {
        keep.pusher.start_streaming_upload().await
    } else {
        None
    };
    // Unpaused, the read may wait for the registry; paused, it never does.
    let mut tee = upload.as_ref().and_then(|u| u.tee(!pause));
    let layer = read_changes(
        client,
        container,
        excludes,
        request.compression,
        keep,
        lower,
        &mut tee,
        &mut paused,
    )
    .instrument(read_span.clone())
    .await;
    // Resume even when reading failed: a speaker's desktop must never stay
    // frozen because of a failed snapshot.
    let resumed = paused.resume().instrument(read_span.clone()).await;
    let paused_ms = paused.held().as_millis() as u64;
    drop(read_span);
    resumed?;
    let (summary, method) = layer?;
    Ok(ReadLayers {
        layers: vec![LayerReport::of(&summary)],
        method,
        stats: summary.stats,
        delta_stats: None,
        paused_ms,
        prepare_ms: 0,
        upload: upload.map(|u| (u, tee)),
        findings: summary.findings,
    })
}

/// containerd's blob directory on this node, found next to the overlay
/// snapshotter's directory the container's upper directory lives in.
async fn content_dir(
    client: &Containerd,
    container: &containerd::ContainerInfo,
) -> Option<PathBuf> {
    let upper = overlay_upper(client, container).await.ok()??;
    let blobs = content_root(&upper)?.join("blobs");
    blobs.is_dir().then_some(blobs)
}

/// containerd's content store directory, next to the overlay snapshotter's
/// directory that holds `upper`.
fn content_root(upper: &OverlayUpper) -> Option<PathBuf> {
    let root = upper
        .path
        .ancestors()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n == "io.containerd.snapshotter.v1.overlayfs")
        })?
        .parent()?;
    let content = root.join("io.containerd.content.v1.content");
    content.is_dir().then_some(content)
}

/// What the new layer is the difference from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lower {
    /// The image the container runs (its snapshot's parent): a commit.
    Image,
    /// A committed snapshot below it, by name (a flatten base's chain ID):
    /// only the Diff service can compare against that.
    Snapshot(String),
}

/// Builds the layer into the content store: from the overlay upper
/// directory when there is one, else through containerd's Diff service.
/// `paused` is the task paused for the read, if the request asked for it.
#[allow(clippy::too_many_arguments)]
async fn read_changes(
    client: &Containerd,
    container: &containerd::ContainerInfo,
    excludes: &Excludes,
    compression: Compression,
    keep: Keep<'_>,
    lower: Lower,
    tee: &mut Option<UploadTee>,
    paused: &mut ReadPause,
) -> Result<(LayerSummary, CommitMethod), CommitError> {
    let mounts = client
        .snapshot_mounts(&container.snapshotter, &container.snapshot_key)
        .await?;
    let upper = match mounts.as_slice() {
        [mount] if lower == Lower::Image => OverlayUpper::from_mount(&mount.r#type, &mount.options),
        _ => None,
    };
    if let Some(upper) = upper {
        match build_layer(
            client,
            LayerSource::Overlay(upper),
            excludes,
            compression,
            keep,
            tee,
        )
        .await
        {
            Ok(summary) => return Ok((summary, CommitMethod::Overlay)),
            Err(CommitError::Layer(LayerError::OverlayFeature { path, feature })) => {
                tracing::info!(path = %path.display(), feature, "overlay feature found; using the Diff service");
            }
            Err(e) => return Err(e),
        }
    }
    // containerd's Diff service reads the container's files by path and
    // follows whatever a name has become by then: it may only read a frozen
    // desktop, whatever the request said about pausing.
    if !paused.is_paused() && client.task_state(&container.id).await? == TaskState::Running {
        tracing::info!("pausing the desktop: the Diff service reads only paused containers");
        paused.hold(PausedTask::pause(client, &container.id).await?);
        if let Some(tee) = tee {
            tee.never_wait();
        }
    }
    let summary = diff_service_layer(
        client,
        container,
        mounts,
        lower,
        excludes,
        compression,
        keep,
        tee,
        paused,
    )
    .await?;
    Ok((summary, CommitMethod::DiffService))
}

/// containerd computes an uncompressed diff between `lower` and the
/// container; we filter and compress it. The fallback of a commit, and
/// the whole of a flatten.
#[allow(clippy::too_many_arguments)]
async fn diff_service_layer(
    client: &Containerd,
    container: &containerd::ContainerInfo,
    upper: Vec<containerd_client::types::Mount>,
    lower: Lower,
    excludes: &Excludes,
    compression: Compression,
    keep: Keep<'_>,
    tee: &mut Option<UploadTee>,
    paused: &mut ReadPause,
) -> Result<LayerSummary, CommitError> {
    let parent = match lower {
        Lower::Image => {
            client
                .snapshot_parent(&container.snapshotter, &container.snapshot_key)
                .await?
        }
        Lower::Snapshot(name) => name,
    };
    // Opened before containerd gets the mounts: the xattrs its tar lacks.
    let dirs = match upper.as_slice() {
        [mount] => LayerDirs::from_mount(&mount.r#type, &mount.source, &mount.options),
        _ => None,
    };
    let view_key = format!("dcs-view-{}", uuid::Uuid::new_v4());
    let lower = client
        .view_snapshot(&container.snapshotter, &view_key, &parent, keep.lease)
        .await?;
    let upper = containerd::read_only_mounts(upper);
    let diff = client
        .diff(lower, upper, media_type::OCI_LAYER, keep.lease)
        .await;
    if let Err(e) = client
        .remove_snapshot(&container.snapshotter, &view_key)
        .await
    {
        tracing::warn!(key = %view_key, error = %e, "could not remove view snapshot; the lease will");
    }
    let diff = diff?;

    // Pass one: which hardlinks need an excluded file's data, and the
    // extended attributes containerd left out. Its blocking thread stops
    // reading when the commit is dropped (cancelled).
    let plan_stop = StopOnDrop::new();
    let excludes_for_plan = excludes.clone();
    let reader = stream_reader(client, &diff.digest, plan_stop.flag()).await?;
    let (plan, dirs) = tokio::task::spawn_blocking(move || {
        let plan = filter::plan(
            Box::new(reader),
            &excludes_for_plan,
            dirs.as_ref(),
            filter::XATTR_CAPTURE_BYTES,
        );
        (plan, dirs)
    })
    .await
    .map_err(|e| CommitError::Interrupted(e.to_string()))?;
    let plan = plan?;
    // Pass two reads the diff (in the content store, under the lease) and
    // nothing of the container, unless the attributes were too many to
    // keep: the desktop goes on while the layer is compressed and pushed.
    let xattrs = match (plan.xattrs, dirs) {
        (None, Some(dirs)) => TarXattrs::Live(dirs),
        (captured, _) => {
            paused.resume().await?;
            captured.map_or(TarXattrs::AsWritten, TarXattrs::Captured)
        }
    };
    let reader = stream_reader(client, &diff.digest, plan_stop.flag()).await?;
    build_layer(
        client,
        LayerSource::Tar(Box::new(reader), plan.promotions, xattrs),
        excludes,
        compression,
        keep,
        tee,
    )
    .await
}

/// A blocking reader over a blob of the content store; it fails once
/// `stop` is set.
async fn stream_reader(
    client: &Containerd,
    digest: &str,
    stop: Arc<AtomicBool>,
) -> Result<ChannelReader, CommitError> {
    let mut stream = client.read_stream("diff", digest).await?;
    let (sender, receiver) = mpsc::channel(4);
    // Ends by itself when the reader is dropped (the send fails).
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            if sender.send(chunk).await.is_err() {
                break;
            }
        }
    });
    Ok(ChannelReader::new(receiver, stop))
}

/// Runs the layer pipeline on a blocking thread, streaming into a new blob
/// of the spool or of containerd's content store.
async fn build_layer(
    client: &Containerd,
    source: LayerSource,
    excludes: &Excludes,
    compression: Compression,
    keep: Keep<'_>,
    tee: &mut Option<UploadTee>,
) -> Result<LayerSummary, CommitError> {
    let store = match keep.spool {
        Some(spool) => Store::Spool(spool.writer()?),
        None => {
            let root = match &source {
                LayerSource::Overlay(upper) | LayerSource::OverlayPass(upper, ..) => {
                    content_root(upper)
                }
                LayerSource::Tar(..) => None,
            };
            let writer = client.blob_writer(keep.lease);
            let flusher = IngestFlusher::start(root.as_deref(), writer.reference());
            Store::Containerd { writer, flusher }
        }
    };
    // Dropping this future (a cancelled commit) leaves the build running on
    // its blocking thread: the sink then refuses its next chunk, the build
    // fails, and the store (the spool file) is dropped with the sink.
    let stop = StopOnDrop::new();
    // The tee comes back only if the layer was written whole.
    let mut sink = ContentSink::new(store, tee.take(), stop.flag());
    let excludes = excludes.clone();
    let (result, sink) = tokio::task::spawn_blocking(move || {
        let result = match write_layer(source, &excludes, compression, &mut sink) {
            Ok((summary, _)) => sink
                .flush_buffer()
                .map(|()| summary)
                .map_err(LayerError::Write),
            Err(e) => Err(e),
        };
        (result, sink)
    })
    .await
    .map_err(|e| CommitError::Interrupted(e.to_string()))?;
    let failed = sink.failed();
    match result {
        Ok(summary) => {
            let (store, returned) = sink.into_parts();
            *tee = returned;
            match store {
                Store::Spool(writer) => {
                    let blob = finish_spooled(writer).await?;
                    keep.pusher.keep_spooled(&summary.digest, blob);
                }
                Store::Containerd { writer, .. } => {
                    writer.commit(&summary.digest, HashMap::new()).await?;
                }
            }
            Ok(summary)
        }
        // The store failed first (disk full, say): its error is the cause.
        Err(e) if failed => Err(match sink.into_store() {
            Store::Spool(writer) => match finish_spooled(writer).await {
                Err(spool) => spool,
                Ok(_) => e.into(),
            },
            Store::Containerd { writer, .. } => writer.into_error().await.into(),
        }),
        Err(e) => {
            if let Store::Containerd { writer, .. } = sink.into_store() {
                writer.abort().await;
            }
            Err(e.into())
        }
    }
}

/// Waits, off the async threads, for a spool file's last chunks.
async fn finish_spooled(writer: SpoolWriter) -> Result<SpooledBlob, CommitError> {
    tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| CommitError::Interrupted(e.to_string()))?
        .map_err(CommitError::from)
}

/// Writes config and manifest with the labels that tie the image's content
/// together for containerd's garbage collector.
async fn write_documents(
    client: &Containerd,
    lease: &Lease,
    image: &BuiltImage,
) -> Result<(), CommitError> {
    client
        .write_blob(
            lease,
            &image.config,
            &image.config_descriptor.digest,
            HashMap::new(),
        )
        .await?;
    let mut labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        image.config_descriptor.digest.clone(),
    )]);
    for (i, layer) in image.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    client
        .write_blob(
            lease,
            &image.manifest,
            &image.manifest_descriptor.digest,
            labels,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unused_delta_is_let_go_unless_it_is_the_bulk_layer_too() {
        assert_eq!(
            unused_delta("sha256:bulk", "sha256:delta", false),
            Some("sha256:delta"),
            "empty, or replaced by the layer read again"
        );
        assert_eq!(
            unused_delta("sha256:bulk", "sha256:delta", true),
            None,
            "in the image"
        );
        // An idle desktop: both layers are the same empty tar, one entry.
        assert_eq!(unused_delta("sha256:empty", "sha256:empty", false), None);
    }
}
