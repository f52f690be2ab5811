//! What each GraphQL request carries: the caller and fresh DataLoaders;
//! and who the persisted query gate sees in the caller.
//! Shared by the POST handler (`http`) and the WebSocket (`ws`), so neither
//! reaches into the other.

use std::time::Duration;

use async_graphql::dataloader::{DataLoader, HashMapCache};

use super::scope::TaskScope;
use crate::graphql::context::Caller;
use crate::graphql::loaders::{
    AncestorLoader, AttemptsLoader, ChildrenLoader, DescendantLoader, LastSnapshotLoader,
    ReportLoader, SnapshotLoader, SnapshotRefLoader,
};
use crate::persisted::Requester;
use crate::state::AppState;

/// How long a DataLoader gathers keys before it queries: long enough that
/// the rows of one list land in one batch even on a busy machine.
const LOADER_DELAY: Duration = Duration::from_millis(5);

/// Per-request data: the caller and fresh DataLoaders whose batches run in
/// `scope` (aborted with the request).
pub(super) fn request_data(
    app: &AppState,
    caller: Caller,
    scope: &TaskScope,
) -> async_graphql::Data {
    let mut data = async_graphql::Data::default();
    data.insert(caller);
    // Cached: a list query feeds them what it already read (see
    // `snapshots`), and lineage walks reuse what earlier rows loaded.
    insert_loader(&mut data, SnapshotLoader(app.clone()), scope);
    insert_loader(&mut data, SnapshotRefLoader(app.clone()), scope);
    insert_loader(&mut data, ChildrenLoader(app.clone()), scope);
    insert_loader(&mut data, AncestorLoader(app.clone()), scope);
    insert_loader(&mut data, DescendantLoader(app.clone()), scope);
    insert_loader(&mut data, LastSnapshotLoader(app.clone()), scope);
    insert_loader(&mut data, AttemptsLoader(app.clone()), scope);
    insert_loader(&mut data, ReportLoader(app.clone()), scope);
    data
}

/// One cached DataLoader whose batches run in `scope`.
fn insert_loader<L, K>(data: &mut async_graphql::Data, loader: L, scope: &TaskScope)
where
    L: async_graphql::dataloader::Loader<K>,
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
{
    let scope = scope.clone();
    data.insert(
        DataLoader::with_cache(
            loader,
            move |task| scope.spawn(task),
            HashMapCache::default(),
        )
        .delay(LOADER_DELAY),
    );
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
