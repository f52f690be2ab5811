//! What each GraphQL request carries: the caller and fresh DataLoaders;
//! and who the persisted query gate sees in the caller.
//! Shared by the POST handler (`http`) and the WebSocket (`ws`), so neither
//! reaches into the other.

use std::sync::Arc;

use super::scope::TaskScope;
use crate::graphql::context::Caller;
use crate::graphql::loaders::RequestLoaders;
use crate::persisted::Requester;
use crate::state::AppState;

/// Per-request data: the caller and fresh DataLoaders whose batches run in
/// `scope` (aborted with the request).
pub(super) fn request_data(
    app: &AppState,
    caller: Caller,
    scope: &TaskScope,
) -> async_graphql::Data {
    let mut data = async_graphql::Data::default();
    data.insert(caller);
    // Made on first use; a list query feeds them what it already read
    // (see `snapshots`), and lineage walks reuse what earlier rows loaded.
    let scope = scope.clone();
    data.insert(RequestLoaders::new(
        app.clone(),
        Arc::new(move |task| scope.spawn(task)),
    ));
    data
}

/// Who the persisted query gate sees in a caller: admins are exempt from
/// registered-only mode, and only authenticated callers store queries.
pub(super) fn requester(caller: &Caller) -> Requester {
    match caller {
        Caller::Authenticated(principal) if principal.is_admin() => Requester::Admin,
        Caller::Authenticated(_) => Requester::User,
        Caller::Refused(_) | Caller::Anonymous => Requester::Anonymous,
    }
}
