//! Which columns a page of snapshots must read for the fields a query
//! selects on its rows (`snapshots { edges { node { ... } } }`).
//!
//! Each field of `Snapshot` that reads its row is listed with the columns
//! its resolver reads. A field not listed (a new one, or one whose rows
//! go to other loaders: `children`, `ancestors`, `descendants`, a
//! `parent` asking more than its id) makes the page read whole rows, so a
//! forgotten entry costs speed, never a wrong answer. The test
//! `api/tests/snapshot_columns.rs` asks every field of `Snapshot` both ways
//! and compares.

use async_graphql::{Lookahead, SelectionField};
use entity::snapshot::Column;

use super::types::asks_only_id;
use crate::service::snapshot_rows::Columns;

/// The columns the rows under `node` (all its aliases) need.
pub(crate) fn for_rows(node: Lookahead<'_>) -> Columns {
    let mut wanted = Vec::new();
    for node in node.selection_fields() {
        for field in node.selection_set() {
            match columns_of(field) {
                Some(columns) => wanted.extend_from_slice(columns),
                None => return Columns::All,
            }
        }
    }
    Columns::only(wanted)
}

/// What one field of a row reads; `None`: the whole row.
fn columns_of(field: SelectionField<'_>) -> Option<&'static [Column]> {
    use Column::*;
    Some(match field.name() {
        // Always read (`Columns::ALWAYS`) or nothing at all.
        "__typename" | "id" | "createdAt" | "requestedBy" | "owner" | "podNamespace" => &[],
        "status" => &[Status],
        "progress" => &[PhaseBytesDone, PhaseBytesTotal],
        "node" => &[Node],
        "containerId" => &[ContainerId],
        "podName" => &[PodName],
        "containerName" => &[ContainerName],
        "baseImage" => &[BaseImage],
        "baseDigest" => &[BaseDigest],
        "target" => &[Target],
        "repository" => &[Repository],
        "message" => &[Message],
        "compression" | "changes" | "excludes" => &[Options],
        "manifestDigest" => &[ManifestDigest],
        "configDigest" => &[ConfigDigest],
        "layerDigest" => &[LayerDigest],
        "layerSize" => &[LayerSize],
        "uncompressedSize" => &[UncompressedSize],
        "pausedMs" => &[PausedMs],
        "prepareMs" => &[PrepareMs],
        "durationMs" => &[DurationMs],
        "flattened" => &[Flattened],
        "layerCount" => &[LayerCount],
        "layersAboveBase" => &[LayerCount, LineageBaseLayers],
        "findings" => &[FindingCount, SecretFindingCount],
        "failureCode" => &[FailureCode],
        "failureReason" => &[FailureReason],
        "updatedAt" => &[UpdatedAt],
        "startedAt" => &[StartedAt],
        "finishedAt" => &[FinishedAt],
        "deletion" => &[DeletedAt, DeletedBy, ManifestDeletion],
        // `parent { id }` is answered from the parent's id and the
        // visibility columns; a parent asking more may be a row of this
        // very page, handed to the loader whole.
        "parent" if asks_only_id(field) => &[ParentId],
        _ => return None,
    })
}
