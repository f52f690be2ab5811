use async_graphql::{Context, InputObject, Object, Result};

use crate::graphql::context::{extend_deadline, principal, state};
use crate::graphql::previews::SnapshotPreview;
use crate::service::previews::{self, PreviewInput};
use crate::service::snapshots::ContainerSelector;

#[derive(Default, Debug)]
pub(super) struct PreviewsQuery;

/// Which desktop to preview, and what to leave out: the container and the
/// `excludes` exactly as `createSnapshot` takes them.
#[derive(InputObject, Debug)]
pub(super) struct PreviewSnapshotInput {
    /// The containerd container id.
    pub container_id: Option<String>,
    /// With `podName`: the pod whose container to preview.
    pub pod_namespace: Option<String>,
    /// With `podNamespace`: the pod's name.
    pub pod_name: Option<String>,
    /// Which container of the pod, when it has several.
    pub container_name: Option<String>,
    /// Needed only when a container id exists on several nodes.
    pub node: Option<String>,
    /// Paths to leave out, as globs (on top of /tmp, /run and session files).
    #[graphql(default)]
    pub excludes: Vec<String>,
}

#[Object]
impl PreviewsQuery {
    /// What a snapshot of a desktop would hold if it were taken now, and
    /// the secret findings that would block it; nothing is paused or
    /// written. The desktop's agent walks the whole change, so this may
    /// take seconds (up to the server's preview timeout, 60 s by default).
    async fn preview_snapshot(
        &self,
        ctx: &Context<'_>,
        input: PreviewSnapshotInput,
    ) -> Result<SnapshotPreview> {
        let who = principal(ctx)?;
        let state = state(ctx)?;
        // The request's deadline must not stop the wait for the agent,
        // which has a bound of its own (plus a second for the rest).
        let limits = state.agents.preview_limits();
        extend_deadline(ctx, limits.timeout + std::time::Duration::from_secs(1));
        let request = PreviewInput {
            container: ContainerSelector {
                node: input.node,
                container_id: input.container_id,
                pod_namespace: input.pod_namespace,
                pod_name: input.pod_name,
                container_name: input.container_name,
            },
            excludes: input.excludes,
        };
        Ok(SnapshotPreview(
            previews::preview(state, who, request).await?,
        ))
    }
}
