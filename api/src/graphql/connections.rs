//! Pages of the lists that grow (snapshots, containers, nodes, webhook
//! deliveries), all in one style: `edges { cursor node }` and `pageInfo`,
//! and `totalCount` where counting is cheap. `first` is bounded by each
//! list's validator and counted by the query complexity
//! (`schema::list_complexity`); cursors are opaque (`service::page`).

use async_graphql::{Context, Object, OutputType, Result, SimpleObject};

use super::context::{principal, state};
use super::types::{Container, Node, Snapshot};
use super::webhooks::WebhookDelivery;
use crate::errors::ApiError;
use crate::service::containers::{self, ContainerFilter};
use crate::service::nodes;
use crate::service::page::{self, Page, Position};

/// Where a page ends, and whether another follows.
#[derive(SimpleObject, Debug)]
pub struct PageInfo {
    /// Whether elements follow this page: ask again with `after: endCursor`.
    pub has_next_page: bool,
    /// The cursor of the page's last element; null when the page is empty.
    pub end_cursor: Option<String>,
}

/// An element of a page, and its cursor.
#[derive(SimpleObject, Debug)]
#[graphql(
    concrete(name = "SnapshotEdge", params(Snapshot)),
    concrete(name = "ContainerEdge", params(Container)),
    concrete(name = "NodeEdge", params(Node)),
    concrete(name = "WebhookDeliveryEdge", params(WebhookDelivery))
)]
pub struct Edge<T: OutputType> {
    /// The element's place in its list, opaque: pass it as `after` for the
    /// elements that follow it. Valid for this list only.
    pub cursor: String,
    /// The element.
    pub node: T,
}

/// A page's edges and its `pageInfo`: each row wrapped as its GraphQL
/// type, with the cursor of its position.
fn edges<M, T: OutputType, P: Position>(
    page: Page<M>,
    position: impl Fn(&M) -> P,
    wrap: impl Fn(M) -> T,
) -> (Vec<Edge<T>>, PageInfo) {
    let edges: Vec<Edge<T>> = page
        .rows
        .into_iter()
        .map(|row| Edge {
            cursor: page::encode(&position(&row)),
            node: wrap(row),
        })
        .collect();
    let page_info = PageInfo {
        has_next_page: page.has_next_page,
        end_cursor: edges.last().map(|e| e.cursor.clone()),
    };
    (edges, page_info)
}

/// A count as GraphQL's `Int`. The lists counted (containers, nodes) hold
/// one row per thing that exists, far below 2^31; a count beyond is a bug,
/// reported as one rather than cut.
fn count_as_int(count: u64, what: &str) -> Result<i32, ApiError> {
    i32::try_from(count).map_err(|_| {
        ApiError::internal(
            "a count does not fit GraphQL's Int",
            &format!("{what}: {count}"),
        )
    })
}

/// A page of snapshots, newest first. Without `totalCount`: counting every
/// snapshot the caller may see scans them all, and the table only grows.
#[derive(SimpleObject, Debug)]
pub struct SnapshotConnection {
    /// The snapshots of this page.
    pub edges: Vec<Edge<Snapshot>>,
    /// Where the page ends.
    pub page_info: PageInfo,
}

impl SnapshotConnection {
    pub fn new(page: Page<entity::snapshot::Model>) -> Self {
        let (edges, page_info) = edges(page, crate::service::snapshots::Cursor::of, Snapshot);
        Self { edges, page_info }
    }
}

#[derive(Debug)]
pub struct ContainerConnection {
    edges: Vec<Edge<Container>>,
    page_info: PageInfo,
    /// What `totalCount` counts, when it is asked for.
    filter: ContainerFilter,
}

impl ContainerConnection {
    pub fn new(page: Page<entity::container::Model>, filter: ContainerFilter) -> Self {
        let (edges, page_info) = edges(page, containers::ContainerCursor::of, Container);
        Self {
            edges,
            page_info,
            filter,
        }
    }
}

/// A page of containers, by node, then container id.
#[Object]
impl ContainerConnection {
    /// The containers of this page.
    async fn edges(&self) -> &[Edge<Container>] {
        &self.edges
    }
    /// Where the page ends.
    async fn page_info(&self) -> &PageInfo {
        &self.page_info
    }
    /// How many containers the caller may see match the filter, on all
    /// pages (one cheap count, only when asked for).
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let count = containers::count(state(ctx)?, principal(ctx)?, self.filter.clone()).await?;
        Ok(count_as_int(count, "containers")?)
    }
}

#[derive(Debug)]
pub struct NodeConnection {
    edges: Vec<Edge<Node>>,
    page_info: PageInfo,
}

impl NodeConnection {
    pub fn new(page: Page<entity::node::Model>) -> Self {
        let (edges, page_info) = edges(
            page,
            |n: &entity::node::Model| nodes::NodeCursor {
                name: n.name.clone(),
            },
            Node,
        );
        Self { edges, page_info }
    }
}

/// A page of nodes, by name.
#[Object]
impl NodeConnection {
    /// The nodes of this page.
    async fn edges(&self) -> &[Edge<Node>] {
        &self.edges
    }
    /// Where the page ends.
    async fn page_info(&self) -> &PageInfo {
        &self.page_info
    }
    /// How many nodes have registered, on all pages (one cheap count,
    /// only when asked for).
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i32> {
        Ok(count_as_int(nodes::count(state(ctx)?).await?, "nodes")?)
    }
}

/// A page of webhook deliveries, newest first. Without `totalCount`: the
/// outbox keeps every delivery, and counting them scans them all.
#[derive(SimpleObject, Debug)]
pub struct WebhookDeliveryConnection {
    /// The deliveries of this page.
    pub edges: Vec<Edge<WebhookDelivery>>,
    /// Where the page ends.
    pub page_info: PageInfo,
}

impl WebhookDeliveryConnection {
    pub fn new(page: Page<entity::webhook_delivery::Model>) -> Self {
        let (edges, page_info) = edges(
            page,
            crate::webhooks::endpoints::DeliveryCursor::of,
            WebhookDelivery,
        );
        Self { edges, page_info }
    }
}
