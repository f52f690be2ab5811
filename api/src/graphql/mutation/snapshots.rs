use async_graphql::{Context, ID, InputObject, Object, Result};

use crate::graphql::context::{audited_principal, state};
use crate::graphql::findings::FindingAcknowledgementInput;
use crate::graphql::ids::parse_id;
use crate::graphql::types::Snapshot;
use crate::service::deletion;
use crate::service::snapshots::{self, ContainerSelector, NewSnapshot};

#[derive(Default, Debug)]
pub(super) struct SnapshotMutation;

/// Layer compression.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compression {
    /// Read by every runtime.
    Gzip,
    /// Several times faster to write.
    Zstd,
}

/// What to snapshot and where to push it. Name the container by
/// `containerId`, or by `podNamespace` + `podName` (+ `containerName`).
#[derive(InputObject)]
pub(super) struct CreateSnapshotInput {
    /// The containerd id of the container.
    pub container_id: Option<String>,
    /// The namespace of the container's pod.
    pub pod_namespace: Option<String>,
    /// The name of the container's pod.
    pub pod_name: Option<String>,
    /// The container's name in its pod; needed when the pod has several.
    pub container_name: Option<String>,
    /// Needed only when a container id exists on several nodes.
    pub node: Option<String>,
    /// The tag to push, e.g. `registry.example/workshops/alice/k8s-101:v1`.
    pub target: String,
    /// Kept in the image history.
    pub message: Option<String>,
    /// Dockerfile-style config changes: `CMD ["app"]`, `ENV K=V`, `WORKDIR /w`,
    /// `USER u`, `LABEL k=v`, `EXPOSE 8080`, `ENTRYPOINT ["x"]`.
    #[graphql(default)]
    pub changes: Vec<String>,
    /// Paths to leave out, as globs (on top of /tmp, /run and session files).
    #[graphql(default)]
    pub excludes: Vec<String>,
    /// The layer compression (default `GZIP`).
    pub compression: Option<Compression>,
    /// Pause the container while its changes are read (default true).
    pub pause: Option<bool>,
    /// Flatten: the image is the lineage's base image (the first one no
    /// snapshot made) plus one layer holding everything above it, however
    /// many snapshots piled up layers in between (default false). The
    /// server also flattens on its own when the layer budget is reached.
    pub flatten: Option<bool>,
    /// Secret findings to push anyway, each by its rule and path exactly as
    /// `previewSnapshot` (or a snapshot refused with `SECRETS_FOUND`) named
    /// it; any other secret the scan finds fails the snapshot before
    /// anything is pushed. At most 1,000.
    #[graphql(default)]
    pub acknowledge_findings: Vec<FindingAcknowledgementInput>,
}

#[Object]
impl SnapshotMutation {
    /// Queues a snapshot of a container; follow it with `snapshotEvents`.
    async fn create_snapshot(
        &self,
        ctx: &Context<'_>,
        input: CreateSnapshotInput,
    ) -> Result<Snapshot> {
        let detail = serde_json::json!({"target": input.target});
        let who = audited_principal(ctx, "createSnapshot", "snapshot", detail).await?;
        let request = NewSnapshot {
            container: ContainerSelector {
                node: input.node,
                container_id: input.container_id,
                pod_namespace: input.pod_namespace,
                pod_name: input.pod_name,
                container_name: input.container_name,
            },
            target: input.target,
            message: input.message,
            changes: input.changes,
            excludes: input.excludes,
            compression: input.compression.map(|c| match c {
                Compression::Gzip => dcs_protocol::Compression::Gzip,
                Compression::Zstd => dcs_protocol::Compression::Zstd,
            }),
            pause: input.pause,
            flatten: input.flatten,
            acknowledged_findings: input
                .acknowledge_findings
                .into_iter()
                .map(Into::into)
                .collect(),
        };
        Ok(Snapshot(
            snapshots::create(state(ctx)?, who, request).await?,
        ))
    }

    /// Cancels a snapshot that has not finished.
    async fn cancel_snapshot(&self, ctx: &Context<'_>, id: ID) -> Result<Snapshot> {
        let detail = serde_json::json!({"id": id.as_str()});
        let who = audited_principal(ctx, "cancelSnapshot", "snapshot", detail).await?;
        let id = parse_id(&id, "snapshot")?;
        Ok(Snapshot(snapshots::cancel(state(ctx)?, who, id).await?))
    }

    /// Deletes a PUSHED snapshot: its image leaves the registry (unless
    /// another live snapshot shares its manifest, or the registry does not
    /// delete), the snapshot becomes DELETED and stays in the lineage, and
    /// `snapshot.deleted` is sent. Its requester or an admin may.
    async fn delete_snapshot(&self, ctx: &Context<'_>, id: ID) -> Result<Snapshot> {
        let detail = serde_json::json!({"id": id.as_str()});
        let who = audited_principal(ctx, "deleteSnapshot", "snapshot", detail).await?;
        let id = parse_id(&id, "snapshot")?;
        Ok(Snapshot(deletion::delete(state(ctx)?, who, id).await?))
    }
}
