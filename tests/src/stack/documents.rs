//! GraphQL documents the tests share.

pub const CONTAINERS: &str =
    "{ containers { id node podNamespace podName containerName state imageDigest } }";
pub const CREATE: &str =
    "mutation($input: CreateSnapshotInput!) { createSnapshot(input: $input) { id status } }";
pub const SNAPSHOT: &str = "query($id: ID!) { snapshot(id: $id) { id status manifestDigest layerDigest failureCode failureReason pausedMs target parent { id } progress { bytesDone bytesTotal } } }";
pub const EVENTS: &str =
    "subscription { snapshotEvents { snapshotId status bytesDone bytesTotal } }";
