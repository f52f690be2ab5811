//! The container inventory, as agents report it.

use std::collections::HashMap;

use dcs_protocol::{Ack, Inventory};
use entity::prelude::*;
use entity::{NodeState, container};
use sea_orm::{
    ColumnTrait, Condition, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Set, Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};

use super::page::{self, Page};
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

/// Where a page of containers ended: by node, then container id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerCursor {
    pub node: String,
    pub id: String,
}

impl page::Position for ContainerCursor {
    const LIST: &'static str = "containers";
    fn is_plausible(&self) -> bool {
        page::plausible_text(&self.node) && page::plausible_text(&self.id)
    }
}

impl ContainerCursor {
    pub fn of(container: &container::Model) -> Self {
        Self {
            node: container.node.clone(),
            id: container.id.clone(),
        }
    }
}

/// The containers the caller may see that match the filter: all for
/// admins; for speakers those of their own pods in their namespaces (see
/// [`crate::auth::policy`]).
fn visible(state: &AppState, who: &Principal, filter: ContainerFilter) -> Select<Container> {
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
    query.filter(state.policy.containers_visible(who))
}

/// One page of the containers the caller may see, after `after`, by node
/// and id.
#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub, first = first))]
pub async fn list(
    state: &AppState,
    who: &Principal,
    filter: ContainerFilter,
    first: usize,
    after: Option<ContainerCursor>,
) -> ApiResult<Page<container::Model>> {
    let mut query = visible(state, who, filter);
    if let Some(after) = after {
        query = query.filter(
            Condition::any()
                .add(container::Column::Node.gt(after.node.clone()))
                .add(
                    Condition::all()
                        .add(container::Column::Node.eq(after.node))
                        .add(container::Column::Id.gt(after.id)),
                ),
        );
    }
    let rows = query
        .order_by_asc(container::Column::Node)
        .order_by_asc(container::Column::Id)
        .limit(page::limit_with_one_more(first))
        .all(&state.db)
        .await?;
    Ok(Page::from_one_more(rows, first))
}

/// How many containers the caller may see match the filter: cheap, the
/// table holds one row per container of the nodes, not a history.
#[tracing::instrument(level = "debug", skip_all, fields(who = %who.sub))]
pub async fn count(state: &AppState, who: &Principal, filter: ContainerFilter) -> ApiResult<u64> {
    Ok(visible(state, who, filter).count(&state.db).await?)
}

/// A container as snapshots name it: its node and containerd id.
pub type ContainerKey = (String, String);

/// The newest snapshot of each container, for DataLoaders: one query for
/// any number of containers (a window over the rows of those ids).
#[tracing::instrument(level = "debug", skip_all, fields(count = keys.len()))]
pub async fn last_snapshots(
    state: &AppState,
    keys: &[ContainerKey],
) -> ApiResult<HashMap<ContainerKey, entity::snapshot::Model>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let backend = state.db.get_database_backend();
    // The ids are bound, never spliced: `$n` on Postgres, `?` on SQLite.
    let placeholders: Vec<String> = (1..=keys.len())
        .map(|n| match backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_string(),
        })
        .collect();
    let sql = format!(
        "SELECT * FROM (SELECT s.*, ROW_NUMBER() OVER (PARTITION BY s.node, s.container_id \
         ORDER BY s.created_at DESC, s.id DESC) AS newest FROM snapshots s \
         WHERE s.container_id IN ({})) ranked WHERE newest = 1",
        placeholders.join(", ")
    );
    let values = keys.iter().map(|(_, id)| id.clone().into());
    let rows = Snapshot::find()
        .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
        .all(&state.db)
        .await?;
    // The same id on another node is another container.
    Ok(rows
        .into_iter()
        .map(|s| ((s.node.clone(), s.container_id.clone()), s))
        .filter(|(key, _)| keys.contains(key))
        .collect())
}
