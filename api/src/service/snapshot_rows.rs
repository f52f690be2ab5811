//! Snapshot rows read whole, or only the columns a request shows.
//!
//! A row has over forty columns; a list page that shows four of them spent
//! most of its database and decoding time on the others. A partial row is
//! still a `snapshot::Model` (so every resolver takes the same type), with
//! the columns not read left as in [`placeholder_row`]: whoever asks for
//! `Columns::Only` must resolve nothing else from those rows (see
//! `graphql::snapshot_columns`, which decides, and its test).

use entity::snapshot::{self, Column, Entity as Snapshot};
use sea_orm::sea_query::ColumnType;
use sea_orm::{
    ColumnTrait, DbErr, IdenStatic, ModelTrait, QueryResult, QuerySelect, QueryTrait, Select, Value,
};
use uuid::Uuid;

use crate::db::OneConnection;

/// Which columns of a snapshot to read.
#[derive(Clone, Debug)]
pub enum Columns {
    All,
    /// These, and always [`Columns::ALWAYS`].
    Only(Vec<Column>),
}

impl Columns {
    /// Read whatever else is asked: the id, the cursor's `created_at`, and
    /// the columns of the visibility rule (a page's rows may be handed to
    /// the `parent { id }` loader, which checks visibility).
    pub const ALWAYS: [Column; 5] = [
        Column::Id,
        Column::CreatedAt,
        Column::RequestedBy,
        Column::Owner,
        Column::PodNamespace,
    ];

    /// `wanted` and the columns always read, each once, in table order.
    pub fn only(wanted: impl IntoIterator<Item = Column>) -> Self {
        let mut columns: Vec<Column> = Self::ALWAYS.into_iter().chain(wanted).collect();
        columns.sort_by_key(|c| *c as usize);
        columns.dedup_by_key(|c| *c as usize);
        Self::Only(columns)
    }
}

/// The rows `select` finds, with `columns` read and the others as in
/// [`placeholder_row`].
pub async fn read_all(
    reads: &mut OneConnection<'_>,
    select: Select<Snapshot>,
    columns: &Columns,
) -> Result<Vec<snapshot::Model>, DbErr> {
    let Columns::Only(only) = columns else {
        return reads.all::<snapshot::Model>(&select).await;
    };
    let statement = select
        .select_only()
        .columns(only.iter().copied())
        .build(reads.backend());
    reads
        .query_all(statement)
        .await?
        .iter()
        .map(|row| {
            let mut model = placeholder_row(Uuid::nil());
            for column in only {
                model.try_set(*column, value_of(row, *column)?)?;
            }
            Ok(model)
        })
        .collect()
}

/// One column of a row, as the value its type holds.
fn value_of(row: &QueryResult, column: Column) -> Result<Value, DbErr> {
    let name = column.as_str();
    Ok(match column.def().get_column_type() {
        ColumnType::Uuid => row.try_get::<Option<Uuid>>("", name)?.into(),
        ColumnType::Text | ColumnType::String(_) | ColumnType::Char(_) => {
            row.try_get::<Option<String>>("", name)?.into()
        }
        ColumnType::BigInteger => row.try_get::<Option<i64>>("", name)?.into(),
        ColumnType::Integer => row.try_get::<Option<i32>>("", name)?.into(),
        ColumnType::Boolean => row.try_get::<Option<bool>>("", name)?.into(),
        ColumnType::Json | ColumnType::JsonBinary => {
            row.try_get::<Option<serde_json::Value>>("", name)?.into()
        }
        ColumnType::TimestampWithTimeZone => row
            .try_get::<Option<chrono::DateTime<chrono::Utc>>>("", name)?
            .into(),
        other => {
            return Err(DbErr::Type(format!(
                "snapshots.{name} has a type partial rows do not read ({other:?})"
            )));
        }
    })
}

/// A row holding `id` and nothing else: every other column empty, times at
/// the epoch. What `parent { id }` answers with (only its id is ever
/// resolved; see `graphql::types::asks_only_id`), the start of a partial
/// row, and the start of the unit tests' rows.
pub(crate) fn placeholder_row(id: Uuid) -> snapshot::Model {
    let never = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    snapshot::Model {
        id,
        requested_by: String::new(),
        node: String::new(),
        container_id: String::new(),
        pod_namespace: None,
        pod_name: None,
        container_name: None,
        base_image: None,
        base_digest: None,
        parent_id: None,
        target: String::new(),
        repository: String::new(),
        message: None,
        options: serde_json::Value::Null,
        status: entity::SnapshotStatus::Queued,
        phase_bytes_done: 0,
        phase_bytes_total: 0,
        manifest_digest: None,
        config_digest: None,
        layer_digest: None,
        layer_size: None,
        uncompressed_size: None,
        paused_ms: None,
        prepare_ms: None,
        duration_ms: None,
        failure_code: None,
        failure_reason: None,
        last_event_seq: 0,
        dispatch_attempts: 0,
        next_dispatch_at: None,
        dispatched_at: None,
        agent_instance_id: None,
        created_at: never,
        updated_at: never,
        started_at: None,
        finished_at: None,
        owner: None,
        trace_parent: None,
        finding_count: None,
        secret_finding_count: None,
        deleted_at: None,
        deleted_by: None,
        manifest_deletion: None,
        flattened: false,
        layer_count: None,
        lineage_base_image: None,
        lineage_base_digest: None,
        lineage_base_layers: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    /// Every column can be read into a partial row: a column of a new type
    /// fails here, not in a request.
    #[test]
    fn every_column_has_a_readable_type() {
        for column in Column::iter() {
            let readable = matches!(
                column.def().get_column_type(),
                ColumnType::Uuid
                    | ColumnType::Text
                    | ColumnType::String(_)
                    | ColumnType::Char(_)
                    | ColumnType::BigInteger
                    | ColumnType::Integer
                    | ColumnType::Boolean
                    | ColumnType::Json
                    | ColumnType::JsonBinary
                    | ColumnType::TimestampWithTimeZone
            );
            assert!(readable, "{column:?}: {:?}", column.def().get_column_type());
        }
    }

    #[test]
    fn only_adds_the_columns_always_read_once() {
        let Columns::Only(columns) = Columns::only([Column::Status, Column::Id, Column::Status])
        else {
            unreachable!()
        };
        let columns: Vec<usize> = columns.into_iter().map(|c| c as usize).collect();
        assert_eq!(
            columns,
            [
                Column::Id,
                Column::RequestedBy,
                Column::PodNamespace,
                Column::Status,
                Column::CreatedAt,
                Column::Owner,
            ]
            .map(|c| c as usize)
        );
    }
}
