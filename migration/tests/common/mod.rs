//! Shared by the migration tests: the checks run against every backend, and
//! fresh PostgreSQL databases.

pub(crate) mod postgres;

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Duration, Utc};
use entity::{
    NodeState, PersistedQueryKind, SnapshotStatus, audit_log, container, is_foreign_key_violation,
    is_unique_violation, node, persisted_query, snapshot, snapshot_event, snapshot_findings,
};
use migration::{Migrator, MigratorTrait, SchemaManager, run_migrations};
use sea_orm_migration::sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, ModelTrait,
    PaginatorTrait, QueryFilter, QueryOrder, sea_query::Expr,
};
use serde_json::json;
use uuid::Uuid;

const TABLES: [&str; 6] = [
    "nodes",
    "containers",
    "snapshots",
    "snapshot_events",
    "audit_log",
    "persisted_queries",
];

/// Everything the schema promises, on whatever backend `db` is: apply the
/// migrations, write and read every table through the entities, check the
/// constraints, roll everything back and apply it again.
pub(crate) async fn exercise_schema(db: &DatabaseConnection) -> Result<()> {
    run_migrations(db).await.context("first up")?;
    // A second start-up finds nothing to do.
    run_migrations(db).await.context("second up")?;
    ensure!(
        Migrator::get_pending_migrations(db).await?.is_empty(),
        "migrations still pending after up"
    );
    expect_tables(db, true).await?;

    rows_round_trip(db).await.context("rows round trip")?;
    one_in_flight_snapshot_per_container(db)
        .await
        .context("one in-flight snapshot per container")?;
    foreign_keys(db).await.context("foreign keys")?;
    cursor_order(db).await.context("cursor order")?;

    Migrator::down(db, None).await.context("down")?;
    expect_tables(db, false).await?;

    Migrator::up(db, None).await.context("up after down")?;
    expect_tables(db, true).await?;
    ensure!(
        node::Entity::find().count(db).await? == 0,
        "tables are not empty after down and up"
    );
    node_row("again")
        .insert(db)
        .await
        .context("insert after down and up")?;
    Ok(())
}

/// Three connections, as three API replicas, run the migrations at once.
pub(crate) async fn concurrent_start_ups(database: &postgres::TestDatabase) -> Result<()> {
    // Connected first, then released together.
    let mut connections = Vec::new();
    for _ in 0..3 {
        connections.push(database.connect().await?);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(connections.len()));
    let mut replicas = tokio::task::JoinSet::new();
    for (replica, db) in connections.into_iter().enumerate() {
        let start = start.clone();
        replicas.spawn(async move {
            start.wait().await;
            let outcome = run_migrations(&db).await;
            db.close().await?;
            outcome.with_context(|| format!("replica {replica}"))
        });
    }
    while let Some(outcome) = replicas.join_next().await {
        outcome??;
    }
    let db = database.connect().await?;
    expect_tables(&db, true).await?;
    let applied = Migrator::get_applied_migrations(&db).await?.len();
    db.close().await?;
    ensure!(
        applied == Migrator::migrations().len(),
        "{applied} migrations recorded"
    );
    Ok(())
}

async fn expect_tables(db: &DatabaseConnection, present: bool) -> Result<()> {
    let manager = SchemaManager::new(db);
    for table in TABLES {
        let has = manager.has_table(table).await?;
        ensure!(
            has == present,
            "table {table}: present = {has}, expected {present}"
        );
    }
    Ok(())
}

/// A fixed instant with microseconds, the precision PostgreSQL keeps.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_795_953_600_123_456).expect("valid instant")
}

fn node_row(name: &str) -> node::ActiveModel {
    node::ActiveModel {
        name: Set(name.to_owned()),
        instance_id: Set(Uuid::new_v4()),
        url: Set(format!("http://{name}.test:9443")),
        version: Set("0.1.0".to_owned()),
        containerd_version: Set("1.6.20".to_owned()),
        max_concurrent_jobs: Set(2),
        registered_at: Set(t0()),
        last_seen_at: Set(t0() + Duration::seconds(5)),
        state: Set(NodeState::Ready),
    }
}

fn container_row(node: &str, id: &str, pod: Option<(&str, &str)>) -> container::ActiveModel {
    container::ActiveModel {
        node: Set(node.to_owned()),
        id: Set(id.to_owned()),
        image: Set("registry.test/desktop:1".to_owned()),
        image_digest: Set(Some("sha256:aaaa".to_owned())),
        state: Set("running".to_owned()),
        snapshotter: Set("overlayfs".to_owned()),
        pod_name: Set(pod.map(|(_, name)| name.to_owned())),
        pod_namespace: Set(pod.map(|(namespace, _)| namespace.to_owned())),
        container_name: Set(pod.map(|_| "desktop".to_owned())),
        updated_at: Set(t0()),
        owner: Set(pod.map(|_| "speaker-1".to_owned())),
    }
}

/// Only the required columns: the defaults are the database's.
fn snapshot_row(
    node: &str,
    container_id: &str,
    status: SnapshotStatus,
    created_at: DateTime<Utc>,
) -> snapshot::ActiveModel {
    snapshot::ActiveModel {
        id: Set(Uuid::new_v4()),
        requested_by: Set("speaker-1".to_owned()),
        node: Set(node.to_owned()),
        container_id: Set(container_id.to_owned()),
        target: Set("registry.test/speaker-1/desktop:v1".to_owned()),
        repository: Set("registry.test/speaker-1/desktop".to_owned()),
        options: Set(json!({"changes": [], "excludes": [], "compression": "gzip", "pause": true})),
        status: Set(status),
        created_at: Set(created_at),
        updated_at: Set(created_at),
        ..Default::default()
    }
}

fn event_row(snapshot_id: Uuid, seq: Option<i64>, kind: &str) -> snapshot_event::ActiveModel {
    snapshot_event::ActiveModel {
        snapshot_id: Set(snapshot_id),
        seq: Set(seq),
        kind: Set(kind.to_owned()),
        payload: Set(json!({"type": kind, "seq": seq})),
        created_at: Set(t0()),
        ..Default::default()
    }
}

async fn rows_round_trip(db: &DatabaseConnection) -> Result<()> {
    // nodes
    let inserted = node_row("node-a").insert(db).await.context("insert node")?;
    let found = node::Entity::find()
        .filter(node::Column::State.eq(NodeState::Ready))
        .filter(node::Column::InstanceId.eq(inserted.instance_id))
        .one(db)
        .await?
        .context("node not found by state and instance id")?;
    ensure!(
        found == inserted,
        "node read back differs: {found:?} vs {inserted:?}"
    );
    ensure!(
        found.registered_at == t0(),
        "timestamp changed: {}",
        found.registered_at
    );

    // containers
    let inserted = container_row("node-a", "c-1", Some(("workshop", "desk-1")))
        .insert(db)
        .await
        .context("insert container")?;
    container_row("node-a", "c-2", None).insert(db).await?;
    let found = container::Entity::find()
        .filter(container::Column::PodNamespace.eq("workshop"))
        .filter(container::Column::PodName.eq("desk-1"))
        .all(db)
        .await?;
    ensure!(found == [inserted.clone()], "containers by pod: {found:?}");
    let owner = inserted
        .find_related(node::Entity)
        .one(db)
        .await?
        .context("container's node")?;
    ensure!(owner.name == "node-a", "related node {}", owner.name);
    let on_node = container::Entity::find()
        .filter(container::Column::Node.eq("node-a"))
        .count(db)
        .await?;
    ensure!(on_node == 2, "{on_node} containers on node-a");

    // snapshots: the defaults, then every column written and read back.
    let queued = snapshot_row("node-a", "c-1", SnapshotStatus::Queued, t0())
        .insert(db)
        .await
        .context("insert snapshot")?;
    ensure!(
        queued.phase_bytes_done == 0
            && queued.phase_bytes_total == 0
            && queued.last_event_seq == 0
            && queued.dispatch_attempts == 0
            && !queued.flattened,
        "defaults not applied: {queued:?}"
    );
    let options = json!({
        "changes": ["CMD [\"/bin/sh\"]", "ENV A=b"],
        "excludes": ["/home/*/.cache"],
        "compression": "zstd",
        "pause": false,
    });
    let mut full: snapshot::ActiveModel = queued.clone().into();
    full.pod_namespace = Set(Some("workshop".to_owned()));
    full.pod_name = Set(Some("desk-1".to_owned()));
    full.container_name = Set(Some("desktop".to_owned()));
    full.base_image = Set(Some("registry.test/desktop:1".to_owned()));
    full.base_digest = Set(Some("sha256:aaaa".to_owned()));
    full.message = Set(Some("tools installed".to_owned()));
    full.options = Set(options.clone());
    full.status = Set(SnapshotStatus::Pushed);
    full.phase_bytes_done = Set(5_000_000_000);
    full.phase_bytes_total = Set(5_000_000_000);
    full.manifest_digest = Set(Some("sha256:m".to_owned()));
    full.config_digest = Set(Some("sha256:c".to_owned()));
    full.layer_digest = Set(Some("sha256:l".to_owned()));
    full.layer_size = Set(Some(4_294_967_297));
    full.uncompressed_size = Set(Some(i64::MAX));
    full.paused_ms = Set(Some(12));
    full.duration_ms = Set(Some(3456));
    full.failure_code = Set(None);
    full.last_event_seq = Set(3);
    full.dispatch_attempts = Set(1);
    full.next_dispatch_at = Set(Some(t0() + Duration::milliseconds(1500)));
    full.dispatched_at = Set(Some(t0() + Duration::microseconds(1)));
    full.agent_instance_id = Set(Some(Uuid::new_v4()));
    full.updated_at = Set(t0() + Duration::seconds(9));
    full.started_at = Set(Some(t0() + Duration::seconds(1)));
    full.finished_at = Set(Some(t0() + Duration::seconds(9)));
    full.finding_count = Set(Some(3));
    full.secret_finding_count = Set(Some(2));
    full.flattened = Set(true);
    full.layer_count = Set(Some(i32::MAX));
    full.lineage_base_image = Set(Some("registry.test/desktop:1".to_owned()));
    full.lineage_base_digest = Set(Some("sha256:aaaa".to_owned()));
    full.lineage_base_layers = Set(Some(i32::MAX - 1));
    let updated = full.update(db).await.context("update snapshot")?;
    let found = snapshot::Entity::find_by_id(queued.id)
        .one(db)
        .await?
        .context("snapshot by id")?;
    ensure!(
        found == updated,
        "snapshot read back differs:\n{found:?}\n{updated:?}"
    );
    ensure!(
        found.options == options,
        "options changed: {}",
        found.options
    );
    scan_columns_round_trip(db, &found).await?;
    let by_filters = snapshot::Entity::find()
        .filter(snapshot::Column::Status.eq(SnapshotStatus::Pushed))
        .filter(snapshot::Column::RequestedBy.eq("speaker-1"))
        .filter(snapshot::Column::Repository.eq("registry.test/speaker-1/desktop"))
        .filter(snapshot::Column::ManifestDigest.eq("sha256:m"))
        .filter(snapshot::Column::AgentInstanceId.eq(found.agent_instance_id))
        .all(db)
        .await?;
    ensure!(
        by_filters == [found.clone()],
        "snapshot by filters: {by_filters:?}"
    );

    // snapshot_events: agent events with a seq, API events without.
    let first = event_row(found.id, Some(1), "DIFFING").insert(db).await?;
    let second = event_row(found.id, None, "DISPATCHED").insert(db).await?;
    ensure!(
        second.id > first.id,
        "event ids do not grow: {} then {}",
        first.id,
        second.id
    );
    let events = snapshot_event::Entity::find()
        .filter(snapshot_event::Column::SnapshotId.eq(found.id))
        .order_by_asc(snapshot_event::Column::Id)
        .all(db)
        .await?;
    ensure!(events == [first.clone(), second], "events: {events:?}");
    ensure!(
        events[0].payload == json!({"type": "DIFFING", "seq": 1}),
        "payload {}",
        events[0].payload
    );
    let related = found.find_related(snapshot_event::Entity).count(db).await?;
    ensure!(related == 2, "{related} related events");

    // An event applies once: a conditional update on last_event_seq.
    for (attempt, expected) in [(1, 1), (2, 0)] {
        let applied = snapshot::Entity::update_many()
            .col_expr(snapshot::Column::LastEventSeq, Expr::value(4_i64))
            .filter(snapshot::Column::Id.eq(found.id))
            .filter(snapshot::Column::LastEventSeq.eq(3_i64))
            .exec(db)
            .await?;
        ensure!(
            applied.rows_affected == expected,
            "attempt {attempt} changed {} rows",
            applied.rows_affected
        );
    }

    // audit_log
    let entry = audit_log::ActiveModel {
        at: Set(t0()),
        actor: Set("speaker-1".to_owned()),
        role: Set("speaker".to_owned()),
        action: Set("createSnapshot".to_owned()),
        target_kind: Set("snapshot".to_owned()),
        target_id: Set(Some(found.id.to_string())),
        outcome: Set("ok".to_owned()),
        detail: Set(json!({"target": found.target})),
        ..Default::default()
    }
    .insert(db)
    .await
    .context("insert audit entry")?;
    let entries = audit_log::Entity::find()
        .filter(audit_log::Column::Actor.eq("speaker-1"))
        .filter(audit_log::Column::At.gte(t0()))
        .order_by_desc(audit_log::Column::At)
        .all(db)
        .await?;
    ensure!(entries == [entry], "audit entries: {entries:?}");

    // persisted_queries: by hash, and the eviction order of one kind.
    let older = persisted_row("a".repeat(64), PersistedQueryKind::Automatic, t0())
        .insert(db)
        .await
        .context("insert persisted query")?;
    let newer = persisted_row(
        "b".repeat(64),
        PersistedQueryKind::Automatic,
        t0() + Duration::seconds(61),
    )
    .insert(db)
    .await?;
    persisted_row(
        "c".repeat(64),
        PersistedQueryKind::Registered,
        t0() - Duration::seconds(1),
    )
    .insert(db)
    .await?;
    let found = persisted_query::Entity::find_by_id("a".repeat(64))
        .one(db)
        .await?
        .context("persisted query by hash")?;
    ensure!(
        found == older,
        "persisted query read back differs: {found:?}"
    );
    let automatic = persisted_query::Entity::find()
        .filter(persisted_query::Column::Kind.eq(PersistedQueryKind::Automatic))
        .order_by_desc(persisted_query::Column::LastUsedAt)
        .all(db)
        .await?;
    ensure!(
        automatic == [newer, older],
        "automatic entries, newest first: {automatic:?}"
    );
    match persisted_row("a".repeat(64), PersistedQueryKind::Registered, t0())
        .insert(db)
        .await
    {
        Ok(row) => bail!("a second row with one hash was accepted: {row:?}"),
        Err(err) if is_unique_violation(&err) => {}
        Err(err) => bail!("a duplicate hash failed otherwise: {err}"),
    }
    Ok(())
}

fn persisted_row(
    hash: String,
    kind: PersistedQueryKind,
    last_used_at: DateTime<Utc>,
) -> persisted_query::ActiveModel {
    persisted_query::ActiveModel {
        query: Set(format!("query Q{} {{ me {{ sub }} }}", &hash[..1])),
        hash: Set(hash),
        kind: Set(kind),
        name: Set((kind == PersistedQueryKind::Registered).then(|| "Q".to_owned())),
        registered_by: Set(None),
        created_at: Set(t0()),
        last_used_at: Set(last_used_at),
    }
}

async fn one_in_flight_snapshot_per_container(db: &DatabaseConnection) -> Result<()> {
    let first = snapshot_row("node-b", "c-9", SnapshotStatus::Queued, t0())
        .insert(db)
        .await?;
    for status in SnapshotStatus::IN_FLIGHT {
        match snapshot_row("node-b", "c-9", status, t0()).insert(db).await {
            Ok(row) => bail!("a second in-flight snapshot was accepted: {row:?}"),
            Err(err) if is_unique_violation(&err) => {}
            Err(err) => bail!("expected a unique violation, got {err}"),
        }
    }
    // Finished ones of the same container, and in-flight ones of others, are fine.
    snapshot_row("node-b", "c-9", SnapshotStatus::Failed, t0())
        .insert(db)
        .await?;
    let failed_too = snapshot_row("node-b", "c-9", SnapshotStatus::Cancelled, t0())
        .insert(db)
        .await?;
    snapshot_row("node-b", "c-10", SnapshotStatus::Queued, t0())
        .insert(db)
        .await?;
    snapshot_row("node-c", "c-9", SnapshotStatus::Pushing, t0())
        .insert(db)
        .await?;

    // The index holds for updates as well.
    let mut retry: snapshot::ActiveModel = failed_too.into();
    retry.status = Set(SnapshotStatus::Queued);
    match retry.update(db).await {
        Ok(row) => bail!("an update made a second in-flight snapshot: {row:?}"),
        Err(err) if is_unique_violation(&err) => {}
        Err(err) => bail!("expected a unique violation on update, got {err}"),
    }

    // Once the first is pushed, the container can be snapshotted again.
    let mut done: snapshot::ActiveModel = first.into();
    done.status = Set(SnapshotStatus::Pushed);
    done.update(db).await?;
    snapshot_row("node-b", "c-9", SnapshotStatus::Queued, t0())
        .insert(db)
        .await
        .context("a new snapshot after the first was pushed")?;

    let in_flight = snapshot::Entity::find()
        .filter(snapshot::Column::Node.eq("node-b"))
        .filter(snapshot::Column::Status.is_in(SnapshotStatus::IN_FLIGHT))
        .count(db)
        .await?;
    ensure!(in_flight == 2, "{in_flight} in-flight snapshots on node-b");
    Ok(())
}

async fn foreign_keys(db: &DatabaseConnection) -> Result<()> {
    // Refused: a container of an unknown node, an event of an unknown snapshot.
    match container_row("nowhere", "c-1", None).insert(db).await {
        Ok(row) => bail!("container of an unknown node accepted: {row:?}"),
        Err(err) if is_foreign_key_violation(&err) => {}
        Err(err) => bail!("expected a foreign key violation, got {err}"),
    }
    match event_row(Uuid::new_v4(), None, "X").insert(db).await {
        Ok(row) => bail!("event of an unknown snapshot accepted: {row:?}"),
        Err(err) if is_foreign_key_violation(&err) => {}
        Err(err) => bail!("expected a foreign key violation, got {err}"),
    }

    // parent_id: SET NULL when the parent goes; events: CASCADE.
    let parent = snapshot_row("node-d", "c-1", SnapshotStatus::Pushed, t0())
        .insert(db)
        .await?;
    let mut child = snapshot_row("node-d", "c-1", SnapshotStatus::Queued, t0());
    child.parent_id = Set(Some(parent.id));
    let child = child.insert(db).await?;
    let linked = child
        .find_linked(snapshot::ParentLink)
        .one(db)
        .await?
        .context("child's parent")?;
    ensure!(linked.id == parent.id, "linked parent {}", linked.id);
    let children = snapshot::Entity::find()
        .filter(snapshot::Column::ParentId.eq(parent.id))
        .all(db)
        .await?;
    ensure!(children == [child.clone()], "children: {children:?}");
    event_row(parent.id, Some(1), "PUSHED").insert(db).await?;

    let parent_id = parent.id;
    parent.delete(db).await?;
    let child = snapshot::Entity::find_by_id(child.id)
        .one(db)
        .await?
        .context("child gone with its parent")?;
    ensure!(
        child.parent_id.is_none(),
        "parent_id kept: {:?}",
        child.parent_id
    );
    let orphans = snapshot_event::Entity::find()
        .filter(snapshot_event::Column::SnapshotId.eq(parent_id))
        .count(db)
        .await?;
    ensure!(orphans == 0, "{orphans} events outlived their snapshot");

    // Deleting a node deletes its containers, not its snapshots.
    let snapshots_before = snapshot::Entity::find()
        .filter(snapshot::Column::Node.eq("node-a"))
        .count(db)
        .await?;
    node::Entity::delete_by_id("node-a").exec(db).await?;
    let containers = container::Entity::find()
        .filter(container::Column::Node.eq("node-a"))
        .count(db)
        .await?;
    ensure!(
        containers == 0,
        "{containers} containers outlived their node"
    );
    let snapshots_after = snapshot::Entity::find()
        .filter(snapshot::Column::Node.eq("node-a"))
        .count(db)
        .await?;
    ensure!(
        snapshots_before == 1 && snapshots_after == 1,
        "snapshots of node-a: {snapshots_before} then {snapshots_after}"
    );
    Ok(())
}

/// One snapshot with a layer size, created at [`t0`].
pub(crate) async fn insert_sample_snapshot(db: &DatabaseConnection) -> Result<snapshot::Model> {
    let mut row = snapshot_row("node-s", "c-1", SnapshotStatus::Pushed, t0());
    row.layer_size = Set(Some(1 << 40));
    Ok(row.insert(db).await?)
}

/// The scan columns, written and read through `snapshot_findings` (the
/// same table): the rest of the row is left as it was.
async fn scan_columns_round_trip(db: &DatabaseConnection, row: &snapshot::Model) -> Result<()> {
    let empty = snapshot_findings::Entity::find_by_id(row.id)
        .one(db)
        .await?
        .context("scan columns by id")?;
    ensure!(
        empty.findings.is_none() && empty.acknowledged_findings.is_none(),
        "scan columns of a new row: {empty:?}"
    );
    let report = json!({"findings": [{"path": "/root/.netrc", "rule": "netrc-file",
        "severity": "SECRET", "line": null, "size": null, "suggestedExclude": null}],
        "truncated": false});
    let acks = json!([{"rule": "netrc-file", "path": "/root/.netrc"}]);
    snapshot_findings::ActiveModel {
        id: Set(row.id),
        findings: Set(Some(report.clone())),
        acknowledged_findings: Set(Some(acks.clone())),
    }
    .update(db)
    .await
    .context("update scan columns")?;
    let found = snapshot_findings::Entity::find_by_id(row.id)
        .one(db)
        .await?
        .context("scan columns by id")?;
    ensure!(
        found.findings == Some(report) && found.acknowledged_findings == Some(acks),
        "scan columns read back differ: {found:?}"
    );
    let rest = snapshot::Entity::find_by_id(row.id)
        .one(db)
        .await?
        .context("snapshot by id")?;
    ensure!(
        &rest == row,
        "writing the scan columns changed the row:\n{rest:?}\n{row:?}"
    );
    Ok(())
}

/// `ORDER BY created_at, id` is chronological, then by id bytes, on both
/// backends (SQLite compares the stored text and blobs).
async fn cursor_order(db: &DatabaseConnection) -> Result<()> {
    let base = t0() + Duration::days(1);
    let times = [
        base + Duration::seconds(1),
        base,
        base + Duration::milliseconds(1),
        base + Duration::microseconds(1),
        base + Duration::microseconds(500_000),
        base,
    ];
    let mut expected = Vec::new();
    for (i, created_at) in times.into_iter().enumerate() {
        let row = snapshot_row(
            "node-e",
            &format!("c-{i}"),
            SnapshotStatus::Pushed,
            created_at,
        )
        .insert(db)
        .await?;
        expected.push((row.created_at, row.id));
    }
    expected.sort();
    let listed: Vec<_> = snapshot::Entity::find()
        .filter(snapshot::Column::Node.eq("node-e"))
        .filter(snapshot::Column::CreatedAt.gte(base))
        .order_by_asc(snapshot::Column::CreatedAt)
        .order_by_asc(snapshot::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.created_at, row.id))
        .collect();
    ensure!(
        listed == expected,
        "order:\n{listed:?}\nexpected:\n{expected:?}"
    );
    Ok(())
}
