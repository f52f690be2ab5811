//! A page of `snapshots` reads only the columns its fields need
//! (`graphql::snapshot_columns`). This asks every field of `Snapshot`, one
//! at a time and all together, on a page and on `snapshot(id)` (which
//! reads whole rows), over rows with every column filled, and requires the
//! same answers: a field that reads a column its entry does not list
//! shows a placeholder on the page and fails here.
//!
//! Needs PostgreSQL (`DATABASE_URL`).

mod support;

use chrono::{TimeZone, Utc};
use entity::snapshot::{self, ManifestDeletion};
use entity::{SnapshotStatus, snapshot_findings};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::{Value, json};
use support::{ADMIN, ALICE, App, Who};
use uuid::Uuid;

/// Selections of the fields whose type is an object; a scalar field is
/// selected by its name. A new object field must be added here.
const OBJECT_FIELDS: &[(&str, &[&str])] = &[
    ("progress", &["progress { bytesDone bytesTotal }"]),
    (
        "findings",
        &[
            "findings { count secretCount warningCount }",
            "findings { truncated findings(first: 5) { path rule severity } }",
        ],
    ),
    ("deletion", &["deletion { at by manifest }"]),
    (
        "parent",
        &[
            "parent { id }",
            "parent { __typename id }",
            "parent { id message status }",
            "parent { parent { id target } }",
        ],
    ),
    ("children", &["children { id target }"]),
    ("ancestors", &["ancestors(first: 3) { id message }"]),
    ("descendants", &["descendants(first: 3) { id pausedMs }"]),
];

/// A row with every column filled, each with its own value.
fn full_row(
    id: Uuid,
    parent: Option<Uuid>,
    n: i64,
    status: SnapshotStatus,
) -> snapshot::ActiveModel {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, n as u32).unwrap();
    snapshot::ActiveModel {
        id: Set(id),
        requested_by: Set("alice".into()),
        node: Set(format!("node-{n}")),
        container_id: Set(format!("container-{n}")),
        pod_namespace: Set(Some(support::NAMESPACE.into())),
        pod_name: Set(Some(format!("desktop-{n}"))),
        container_name: Set(Some(format!("desk-{n}"))),
        base_image: Set(Some(format!("registry.test/base:{n}"))),
        base_digest: Set(Some(format!("sha256:{:064x}", n))),
        parent_id: Set(parent),
        target: Set(format!("registry.test/workshops/alice/d:v{n}")),
        repository: Set("registry.test/workshops/alice/d".into()),
        message: Set(Some(format!("message {n}"))),
        options: Set(
            json!({"changes": [format!("ENV N={n}")], "excludes": [format!("/tmp/{n}")],
            "compression": "zstd", "pause": true}),
        ),
        status: Set(status),
        phase_bytes_done: Set(100 + n),
        phase_bytes_total: Set(200 + n),
        manifest_digest: Set(Some(format!("sha256:{:064x}", 1000 + n))),
        config_digest: Set(Some(format!("sha256:{:064x}", 2000 + n))),
        layer_digest: Set(Some(format!("sha256:{:064x}", 3000 + n))),
        layer_size: Set(Some(4000 + n)),
        uncompressed_size: Set(Some(5000 + n)),
        paused_ms: Set(Some(6 + n)),
        prepare_ms: Set(Some(7 + n)),
        duration_ms: Set(Some(8 + n)),
        failure_code: Set(Some(format!("CODE_{n}"))),
        failure_reason: Set(Some(format!("reason {n}"))),
        last_event_seq: Set(9 + n),
        dispatch_attempts: Set(1),
        dispatched_at: Set(Some(at)),
        created_at: Set(at),
        updated_at: Set(at + chrono::Duration::seconds(1)),
        started_at: Set(Some(at + chrono::Duration::seconds(2))),
        finished_at: Set(Some(at + chrono::Duration::seconds(3))),
        owner: Set(Some("alice".into())),
        finding_count: Set(Some(1)),
        secret_finding_count: Set(Some(1)),
        deleted_at: Set(Some(at + chrono::Duration::seconds(4))),
        deleted_by: Set(Some(format!("deleter-{n}"))),
        manifest_deletion: Set(Some(ManifestDeletion::Absent)),
        flattened: Set(n % 2 == 0),
        layer_count: Set(Some(10 + n as i32)),
        lineage_base_image: Set(Some("registry.test/base:0".into())),
        lineage_base_digest: Set(Some(format!("sha256:{:064x}", 0))),
        lineage_base_layers: Set(Some(3)),
        ..Default::default()
    }
}

/// Three generations with every column filled, and one row with nothing
/// optional (a new snapshot).
async fn seed(app: &App) -> Vec<Uuid> {
    let db = &app.state.db;
    let mut ids = Vec::new();
    let mut parent = None;
    for n in 0..3 {
        let id = Uuid::new_v4();
        let status = [
            SnapshotStatus::Pushed,
            SnapshotStatus::Deleted,
            SnapshotStatus::Failed,
        ][n as usize];
        full_row(id, parent, n, status)
            .insert(db)
            .await
            .expect("insert");
        snapshot_findings::ActiveModel {
            id: Set(id),
            findings: Set(Some(
                json!({"findings": [{"path": format!("/root/.netrc-{n}"),
                "rule": "netrc-file", "severity": "SECRET", "line": null, "size": null,
                "suggestedExclude": null}], "truncated": false}),
            )),
            acknowledged_findings: Set(None),
        }
        .update(db)
        .await
        .expect("store a report");
        ids.push(id);
        parent = Some(id);
    }
    let bare = Uuid::new_v4();
    snapshot::ActiveModel {
        id: Set(bare),
        requested_by: Set("alice".into()),
        node: Set("node-9".into()),
        container_id: Set("container-9".into()),
        target: Set("registry.test/workshops/alice/d:new".into()),
        repository: Set("registry.test/workshops/alice/d".into()),
        options: Set(json!({"changes": [], "excludes": [], "compression": "gzip", "pause": true})),
        status: Set(SnapshotStatus::Queued),
        created_at: Set(Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap()),
        updated_at: Set(Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert");
    ids.push(bare);
    ids
}

/// Every field of `Snapshot`, from the schema itself, as selections.
async fn selections(app: &App) -> Vec<String> {
    let data = app
        .data(
            ADMIN,
            r#"{ __type(name: "Snapshot") { fields { name type { kind ofType { kind ofType { kind ofType { kind } } } } } } }"#,
            json!({}),
        )
        .await;
    let mut selections = Vec::new();
    for field in data["__type"]["fields"].as_array().unwrap() {
        let name = field["name"].as_str().unwrap();
        let mut kind = &field["type"];
        while kind["kind"] == "NON_NULL" || kind["kind"] == "LIST" {
            kind = &kind["ofType"];
        }
        if kind["kind"] == "SCALAR" || kind["kind"] == "ENUM" {
            selections.push(name.to_string());
            continue;
        }
        let (_, listed) = OBJECT_FIELDS
            .iter()
            .find(|(field, _)| *field == name)
            .unwrap_or_else(|| {
                panic!("add a selection of the new field `{name}` to OBJECT_FIELDS")
            });
        selections.extend(listed.iter().map(|s| s.to_string()));
    }
    selections
}

/// `selection` of every row, from a page and from `snapshot(id)`.
async fn both_ways(app: &App, who: Who, selection: &str) -> (Vec<Value>, Vec<Value>) {
    let page = app
        .graphql(
            who,
            &format!("{{ snapshots(first: 10) {{ edges {{ node {{ id {selection} }} }} }} }}"),
            json!({}),
        )
        .await;
    assert!(page["errors"].is_null(), "{selection}: {page}");
    let page = &page["data"];
    let listed: Vec<Value> = page["snapshots"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let mut single = Vec::new();
    for row in &listed {
        let one = app
            .data(
                who,
                &format!("query($id: ID!) {{ snapshot(id: $id) {{ id {selection} }} }}"),
                json!({"id": row["id"]}),
            )
            .await;
        single.push(one["snapshot"].clone());
    }
    (listed, single)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_reads_what_it_shows() {
    let app = App::start().await;
    let ids = seed(&app).await;
    let selections = selections(&app).await;
    assert!(selections.len() > 40, "{selections:?}");
    // All at once, but for the lists, which together are too complex.
    let all = selections
        .iter()
        .filter(|s| {
            !s.starts_with("children") && !s.contains("ancestors") && !s.contains("descendants")
        })
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    for who in [ADMIN, ALICE] {
        for selection in selections.iter().chain([&all]) {
            let (listed, single) = both_ways(&app, who, selection).await;
            assert_eq!(listed.len(), ids.len(), "{selection} as {}", who.sub);
            assert_eq!(
                listed, single,
                "{selection} as {}: page and snapshot(id) differ",
                who.sub
            );
        }
    }
    // The answers are the rows' own values, not two placeholders alike.
    let (listed, _) = both_ways(&app, ADMIN, "message pausedMs compression").await;
    let newest_full = &listed[1];
    assert_eq!(newest_full["message"], "message 2", "{listed:?}");
    assert_eq!(newest_full["pausedMs"], "8");
    assert_eq!(newest_full["compression"], "zstd");
}

/// The page's SQL names only the columns of what was asked, and whole rows
/// when a field's rows go to other loaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reads_the_columns_of_its_fields() {
    use api::service::snapshot_rows::Columns;
    use entity::snapshot::Column;
    let app = App::start().await;
    seed(&app).await;
    let principal = api::auth::Principal {
        sub: "root".into(),
        role: api::auth::Role::Admin,
        namespaces: vec![],
    };
    let filter = api::service::snapshots::SnapshotFilter::default();
    let only = Columns::only([Column::Status]);
    let page = api::service::snapshots::list(
        &app.state,
        &mut api::db::OneConnection::new(&app.state.db),
        &principal,
        filter.clone(),
        10,
        None,
        &only,
    )
    .await
    .expect("a page");
    // Read: the status and the columns always read; not read: the message.
    assert!(page.rows.iter().all(|r| r.message.is_none()));
    assert!(
        page.rows
            .iter()
            .any(|r| r.status == SnapshotStatus::Deleted)
    );
    assert!(page.rows.iter().all(|r| r.requested_by == "alice"));
    let whole = api::service::snapshots::list(
        &app.state,
        &mut api::db::OneConnection::new(&app.state.db),
        &principal,
        filter,
        10,
        None,
        &Columns::All,
    )
    .await
    .expect("a page");
    assert!(whole.rows.iter().any(|r| r.message.is_some()));
}

/// Fields reached through inline fragments, named fragments and aliases
/// read their columns too: a selection the column map failed to see would
/// show a placeholder on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_and_aliases_read_their_columns() {
    let app = App::start().await;
    seed(&app).await;
    for selection in [
        "... on Snapshot { message failureReason }",
        "... Timing",
        "said: message reason: failureReason",
        "... on Snapshot { ... on Snapshot { layerDigest } }",
    ] {
        // Defined only where used: an unused fragment is a validation error.
        let fragment = if selection.contains("Timing") {
            "fragment Timing on Snapshot { pausedMs durationMs }"
        } else {
            ""
        };
        let page = app
            .data(
                ADMIN,
                &format!(
                    "{{ snapshots(first: 10) {{ edges {{ node {{ id {selection} }} }} }} }} {fragment}"
                ),
                json!({}),
            )
            .await;
        let listed: Vec<Value> = page["snapshots"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect();
        for row in &listed {
            let one = app
                .data(
                    ADMIN,
                    &format!(
                        "query($id: ID!) {{ snapshot(id: $id) {{ id {selection} }} }} {fragment}"
                    ),
                    json!({"id": row["id"]}),
                )
                .await;
            assert_eq!(row, &one["snapshot"], "{selection}");
        }
        // Not vacuous: the full rows show something other than null.
        assert!(
            listed.iter().any(|r| r
                .as_object()
                .unwrap()
                .iter()
                .any(|(k, v)| k != "id" && !v.is_null())),
            "{selection}: {listed:?}"
        );
    }
}
