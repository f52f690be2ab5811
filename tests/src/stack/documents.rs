//! GraphQL documents the tests share.

/// The first 100 containers (more than any test makes): read the list with
/// `page_list(&data["containers"])`.
pub const CONTAINERS: &str = "{ containers(first: 100) { edges { node { id node podNamespace \
    podName containerName state imageDigest } } } }";
pub const CREATE: &str =
    "mutation($input: CreateSnapshotInput!) { createSnapshot(input: $input) { id status } }";
pub const SNAPSHOT: &str = "query($id: ID!) { snapshot(id: $id) { id status manifestDigest layerDigest failureCode failureReason pausedMs target parent { id } progress { bytesDone bytesTotal } } }";
pub const EVENTS: &str =
    "subscription { snapshotEvents { snapshotId status bytesDone bytesTotal } }";

pub const CREATE_WEBHOOK_ENDPOINT: &str = "mutation($input: CreateWebhookEndpointInput!) { \
    createWebhookEndpoint(input: $input) { secret endpoint { id enabled } } }";
