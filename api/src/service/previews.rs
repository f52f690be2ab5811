//! `previewSnapshot`: what a snapshot of a desktop would hold now, and
//! what the secret scan finds in it, asked of the desktop's agent. The
//! container is chosen and authorised exactly as `createSnapshot` chooses
//! it (another speaker's desktop is "not found"), and the excludes are
//! checked by the same rules; nothing is written.

use dcs_protocol::{PathSize, Preview, PreviewRequest};
use entity::container;
use reqwest::StatusCode;

use super::findings;
use super::snapshots::{ContainerSelector, find_container, ready_node, validate_excludes};
use crate::agents::PreviewFailure;
use crate::auth::Principal;
use crate::errors::{ApiError, ApiResult, Code};
use crate::state::AppState;

/// What `previewSnapshot` asks for.
#[derive(Debug, Clone, Default)]
pub struct PreviewInput {
    pub container: ContainerSelector,
    pub excludes: Vec<String>,
}

/// The longest lists of a preview: the agent sends 20 biggest files and
/// directories, and one entry per exclude in force (at most 64 of the
/// request and a dozen defaults).
const MAX_BIGGEST: usize = 20;
const MAX_EXCLUDED: usize = 128;

/// Asks the agent of the container's node for a preview.
#[tracing::instrument(skip_all, fields(who = %who.sub))]
pub async fn preview(state: &AppState, who: &Principal, input: PreviewInput) -> ApiResult<Preview> {
    validate_excludes(&input.excludes)?;
    let container = find_container(state, who, &input.container).await?;
    let node = ready_node(state, &container).await?;
    let request = PreviewRequest {
        container_id: container.id.clone(),
        excludes: input.excludes,
    };
    match state.agents.preview(&node.name, &node.url, &request).await {
        Ok(preview) => Ok(bounded(preview)),
        Err(failure) => Err(refusal(failure, &node.name, &container)),
    }
}

/// A preview from an agent, bounded before it is shown: its lists at their
/// documented lengths, its findings as a stored report is bounded.
fn bounded(mut preview: Preview) -> Preview {
    let fits = |p: &PathSize| p.path.len() <= findings::MAX_PATH_BYTES;
    preview.biggest_files.retain(fits);
    preview.biggest_files.truncate(MAX_BIGGEST);
    preview.biggest_directories.retain(fits);
    preview.biggest_directories.truncate(MAX_BIGGEST);
    preview.excluded.truncate(MAX_EXCLUDED);
    preview.findings = findings::bounded(preview.findings);
    preview
}

/// What the speaker is told when the agent gives no preview.
fn refusal(failure: PreviewFailure, node: &str, container: &container::Model) -> ApiError {
    match failure {
        PreviewFailure::Busy => ApiError::new(
            Code::RateLimited,
            "too many previews are running on this server; try again in a moment",
        ),
        PreviewFailure::Refused { status, message } => match status {
            StatusCode::TOO_MANY_REQUESTS => ApiError::new(
                Code::RateLimited,
                format!(
                    "the agent of node {node} is already previewing as many desktops as it may; \
                     try again in a moment"
                ),
            ),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::bad_input(format!(
                "this desktop cannot be previewed: a preview reads the changes kept by the \
                 overlayfs snapshotter, and this desktop uses \"{}\" (a snapshot of it can \
                 still be taken)",
                container.snapshotter
            )),
            // The agent no longer has it: as for a container never seen.
            StatusCode::NOT_FOUND => ApiError::not_found("no such container"),
            StatusCode::BAD_REQUEST => {
                ApiError::bad_input(format!("the agent refused the preview: {message}"))
            }
            _ => {
                tracing::warn!(%node, %status, %message, "the agent failed a preview");
                ApiError::unavailable(format!(
                    "the agent of node {node} could not preview the desktop (HTTP {})",
                    status.as_u16()
                ))
            }
        },
        PreviewFailure::TimedOut(after) => ApiError::new(
            Code::Timeout,
            format!(
                "the agent of node {node} did not answer the preview within {} s",
                after.as_secs()
            ),
        ),
        PreviewFailure::TooLarge(limit) => {
            tracing::warn!(%node, limit, "a preview answer was over the limit");
            ApiError::unavailable(format!(
                "the agent's preview is larger than this server reads ({limit} bytes)"
            ))
        }
        PreviewFailure::Unreachable(why) => {
            tracing::warn!(%node, error = %why, "agent unreachable for a preview");
            ApiError::unavailable(format!("the agent of node {node} could not be reached"))
        }
        PreviewFailure::Malformed(why) => {
            tracing::warn!(%node, error = %why, "the agent's preview could not be read");
            ApiError::unavailable(format!(
                "the agent of node {node} answered with something that is not a preview"
            ))
        }
    }
}
