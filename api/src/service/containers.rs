//! The container inventory, as agents report it.

use dcs_protocol::{Ack, Inventory};
use entity::prelude::*;
use entity::{NodeState, container};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};

use crate::auth::Principal;
use crate::errors::ApiResult;
use crate::state::AppState;

/// Replaces a node's container list with the one the agent sent.
#[tracing::instrument(skip_all, fields(node = %inventory.node, containers = inventory.containers.len()))]
pub async fn replace_inventory(state: &AppState, inventory: Inventory) -> ApiResult<Ack> {
    let Some(node) = Node::find_by_id(inventory.node.clone())
        .one(&state.db)
        .await?
    else {
        return Ok(Ack { known: false });
    };
    if node.instance_id != inventory.instance_id || node.state != NodeState::Ready {
        return Ok(Ack { known: false });
    }
    let now = crate::clock::now();
    let txn = state.db.begin().await?;
    Container::delete_many()
        .filter(container::Column::Node.eq(inventory.node.clone()))
        .exec(&txn)
        .await?;
    let rows: Vec<container::ActiveModel> = inventory
        .containers
        .into_iter()
        .map(|c| container::ActiveModel {
            node: Set(inventory.node.clone()),
            id: Set(c.id),
            image: Set(c.image),
            image_digest: Set(c.image_digest),
            state: Set(c.state),
            snapshotter: Set(c.snapshotter),
            pod_name: Set(c.pod_name),
            pod_namespace: Set(c.pod_namespace),
            container_name: Set(c.container_name),
            updated_at: Set(now),
            owner: Set(c.owner),
        })
        .collect();
    if !rows.is_empty() {
        Container::insert_many(rows).exec(&txn).await?;
    }
    txn.commit().await?;
    Ok(Ack { known: true })
}

/// Filters of the `containers` query.
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    pub node: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

/// Containers the caller may see: all for admins; for speakers those of
/// their own pods in their namespaces (see [`crate::auth::policy`]).
pub async fn list(
    state: &AppState,
    who: &Principal,
    filter: ContainerFilter,
) -> ApiResult<Vec<container::Model>> {
    let mut query = Container::find();
    if let Some(node) = filter.node {
        query = query.filter(container::Column::Node.eq(node));
    }
    if let Some(ns) = filter.pod_namespace {
        query = query.filter(container::Column::PodNamespace.eq(ns));
    }
    if let Some(pod) = filter.pod_name {
        query = query.filter(container::Column::PodName.eq(pod));
    }
    query = query.filter(state.policy.containers_visible(who));
    Ok(query
        .order_by_asc(container::Column::Node)
        .order_by_asc(container::Column::Id)
        .all(&state.db)
        .await?)
}
