//! The invariants, checked after each round once every part is back:
//!
//! 1. every snapshot reaches a terminal status (`PUSHED`, `FAILED`,
//!    `CANCELLED`) within the bound;
//! 2. no terminal status ever changes: in `snapshot_events`, exactly one
//!    terminal event per snapshot, no status event after it, and the row's
//!    status is that event's;
//! 3. exactly one terminal webhook event id per `PUSHED`/`FAILED` snapshot
//!    (none for `CANCELLED`), of the matching type, delivered at least once
//!    (the receiver saw it, and no other id for that snapshot);
//! 4. the registry's tag has the `PUSHED` manifest digest;
//! 5. no desktop is left paused;
//! 6. no lease of the agent is older than a commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::receiver::{Receiver, deliveries};
use super::{NODE, Shared};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The snapshot (or desktop, or lease) concerned.
    pub subject: String,
    /// Which invariant.
    pub invariant: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.invariant, self.subject, self.detail)
    }
}

const STATUS_EVENTS: [&str; 7] = [
    "QUEUED",
    "DIFFING",
    "PUSHING",
    "PUSHED",
    "FAILED",
    "CANCELLED",
    "HANDED_BACK",
];
const TERMINAL: [&str; 3] = ["PUSHED", "FAILED", "CANCELLED"];

#[derive(Debug)]
pub struct Settled {
    pub took: Duration,
    /// (snapshot id, status, container) still in flight at the bound.
    pub stuck: Vec<(String, String, String)>,
}

/// Waits until no snapshot is in flight (those in `ignore`, already
/// reported stuck, aside), at most `bound` after `parts_back`.
pub(crate) async fn settle(
    shared: &Shared,
    parts_back: Instant,
    bound: Duration,
    ignore: &HashSet<String>,
) -> Settled {
    let q = "SELECT id, status, container_id FROM snapshots \
             WHERE status IN ('QUEUED','DIFFING','PUSHING') ORDER BY created_at";
    loop {
        let rows: Option<Vec<(String, String, String)>> = shared.rows(q).await.ok().map(|rows| {
            rows.into_iter()
                .filter(|r| r.len() == 3 && !ignore.contains(&r[0]))
                .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
                .collect()
        });
        if rows.as_ref().is_some_and(|r| r.is_empty()) {
            return Settled {
                took: parts_back.elapsed(),
                stuck: Vec::new(),
            };
        }
        if parts_back.elapsed() > bound {
            return Settled {
                took: parts_back.elapsed(),
                stuck: rows.unwrap_or_default(),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every delivery of the endpoint succeeded and the receiver
/// saw each, at most `bound`.
pub(crate) async fn wait_deliveries(
    shared: &Shared,
    endpoint: &str,
    receiver: &Receiver,
    bound: Duration,
) {
    let deadline = Instant::now() + bound;
    loop {
        let q = format!(
            "SELECT message_id, status FROM webhook_deliveries WHERE endpoint_id = '{endpoint}'"
        );
        if let Ok(rows) = shared.rows(&q).await {
            let seen: HashSet<String> = deliveries(receiver)
                .into_iter()
                .map(|d| d.webhook_id)
                .collect();
            if rows
                .iter()
                .all(|r| r.len() == 2 && r[1] == "SUCCEEDED" && seen.contains(&r[0]))
            {
                return;
            }
        }
        if Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Row {
    status: String,
    node: String,
    target: String,
    manifest: String,
    container: String,
}

#[derive(Debug)]
pub struct Checker {
    endpoint: String,
    pub violations: Vec<Violation>,
    /// Findings that are not invariants (e.g. a tag left by a cancelled
    /// snapshot).
    pub warnings: Vec<String>,
    keys: HashSet<String>,
    registry_checked: HashSet<String>,
    snapshots: usize,
    /// Snapshots reported not final (the next rounds do not wait for them).
    pub stuck: HashSet<String>,
    bound_seconds: u64,
}

impl Checker {
    pub fn new(endpoint: String, bound: Duration) -> Self {
        Self {
            bound_seconds: bound.as_secs(),
            endpoint,
            violations: Vec::new(),
            warnings: Vec::new(),
            keys: HashSet::new(),
            registry_checked: HashSet::new(),
            snapshots: 0,
            stuck: HashSet::new(),
        }
    }

    pub fn snapshots_seen(&self) -> usize {
        self.snapshots
    }

    fn add(&mut self, out: &mut Vec<Violation>, v: Violation) {
        let key = format!("{}|{}", v.subject, v.invariant);
        if self.keys.insert(key) {
            self.violations.push(v.clone());
            out.push(v);
        }
    }

    /// Snapshots still in flight at the bound.
    pub fn not_final(&mut self, stuck: &[(String, String, String)]) -> Vec<Violation> {
        let mut out = Vec::new();
        for (id, status, _) in stuck {
            self.stuck.insert(id.clone());
            self.add(
                &mut out,
                Violation {
                    subject: id.clone(),
                    invariant: "final within the bound",
                    detail: format!(
                        "still {status} {} s after every part was back",
                        self.bound_seconds
                    ),
                },
            );
        }
        out
    }

    pub(crate) async fn status_counts(&self, shared: &Shared) -> BTreeMap<String, usize> {
        shared
            .rows("SELECT status, count(*) FROM snapshots GROUP BY status ORDER BY status")
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.len() == 2)
            .map(|r| (r[0].clone(), r[1].parse().unwrap_or(0)))
            .collect()
    }

    /// Checks everything (the database-wide invariants over all snapshots
    /// so far; the registry for snapshots not checked yet); returns the
    /// violations not reported before.
    pub(crate) async fn check(&mut self, shared: &Shared, receiver: &Receiver) -> Vec<Violation> {
        let mut out = Vec::new();
        let snapshots = match shared
            .rows(
                "SELECT id, status, node, target, coalesce(manifest_digest, ''), container_id \
                 FROM snapshots",
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                shared.note(format!("the check could not read snapshots: {e}"));
                return out;
            }
        };
        let snapshots: HashMap<String, Row> = snapshots
            .into_iter()
            .filter(|r| r.len() == 6)
            .map(|r| {
                (
                    r[0].clone(),
                    Row {
                        status: r[1].clone(),
                        node: r[2].clone(),
                        target: r[3].clone(),
                        manifest: r[4].clone(),
                        container: r[5].clone(),
                    },
                )
            })
            .collect();
        self.snapshots = snapshots.len();

        // 2. The event history.
        let mut events: HashMap<String, Vec<String>> = HashMap::new();
        for r in shared
            .rows("SELECT snapshot_id, kind FROM snapshot_events ORDER BY id")
            .await
            .unwrap_or_default()
        {
            if r.len() == 2 {
                events.entry(r[0].clone()).or_default().push(r[1].clone());
            }
        }
        for (id, row) in &snapshots {
            if !TERMINAL.contains(&row.status.as_str()) {
                continue;
            }
            let kinds: Vec<&String> = events
                .get(id)
                .map(|k| {
                    k.iter()
                        .filter(|k| STATUS_EVENTS.contains(&k.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            let history = kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(" -> ");
            let terminals: Vec<&&String> = kinds
                .iter()
                .filter(|k| TERMINAL.contains(&k.as_str()))
                .collect();
            let first_terminal = kinds.iter().position(|k| TERMINAL.contains(&k.as_str()));
            let after = first_terminal.map(|p| kinds.len() - p - 1).unwrap_or(0);
            if terminals.len() != 1 || after > 0 {
                self.add(
                    &mut out,
                    Violation {
                        subject: id.clone(),
                        invariant: "terminal status never changes",
                        detail: format!(
                            "{} terminal events, {after} status events after the first; \
                             events {history}; row now {}",
                            terminals.len(),
                            row.status
                        ),
                    },
                );
            } else if terminals[0].as_str() != row.status {
                self.add(
                    &mut out,
                    Violation {
                        subject: id.clone(),
                        invariant: "terminal status never changes",
                        detail: format!(
                            "row says {} but its terminal event is {}; events {history}",
                            row.status, terminals[0]
                        ),
                    },
                );
            }
        }

        // 3. Webhooks: the outbox and what the receiver saw.
        let q = format!(
            "SELECT payload::json->'data'->>'snapshotId', message_id, event_type, status, attempts \
             FROM webhook_deliveries WHERE endpoint_id = '{}' AND event_type <> 'ping'",
            self.endpoint
        );
        let mut outbox: HashMap<String, Vec<(String, String, String, String)>> = HashMap::new();
        for r in shared.rows(&q).await.unwrap_or_default() {
            if r.len() == 5 {
                outbox.entry(r[0].clone()).or_default().push((
                    r[1].clone(),
                    r[2].clone(),
                    r[3].clone(),
                    r[4].clone(),
                ));
            }
        }
        let mut received: HashMap<String, HashMap<String, (usize, String)>> = HashMap::new();
        for d in deliveries(receiver) {
            let entry = received
                .entry(d.snapshot_id.clone())
                .or_default()
                .entry(d.webhook_id.clone())
                .or_insert((0, d.event_type.clone()));
            entry.0 += 1;
        }
        for (id, row) in &snapshots {
            if !TERMINAL.contains(&row.status.as_str()) {
                continue;
            }
            let expected = match row.status.as_str() {
                "PUSHED" => Some("snapshot.pushed"),
                "FAILED" => Some("snapshot.failed"),
                _ => None,
            };
            let rows = outbox.get(id).cloned().unwrap_or_default();
            let ids: HashSet<&String> = rows.iter().map(|r| &r.0).collect();
            let got = received.get(id).cloned().unwrap_or_default();
            let described = rows
                .iter()
                .map(|r| format!("{} {} {} ({} attempts)", r.0, r.1, r.2, r.3))
                .collect::<Vec<_>>()
                .join("; ");
            match expected {
                None => {
                    if !rows.is_empty() || !got.is_empty() {
                        self.add(
                            &mut out,
                            Violation {
                                subject: id.clone(),
                                invariant: "one terminal webhook",
                                detail: format!(
                                    "{} ended {} but has webhook events: outbox [{described}], received {:?}",
                                    id, row.status, got
                                ),
                            },
                        );
                    }
                }
                Some(kind) => {
                    if ids.len() != 1 || rows.iter().any(|r| r.1 != kind) {
                        self.add(
                            &mut out,
                            Violation {
                                subject: id.clone(),
                                invariant: "one terminal webhook",
                                detail: format!(
                                    "ended {} (wants one {kind}); outbox [{described}]",
                                    row.status
                                ),
                            },
                        );
                        continue;
                    }
                    let message = rows[0].0.clone();
                    let extra: Vec<&String> = got.keys().filter(|k| **k != message).collect();
                    if !extra.is_empty() {
                        self.add(
                            &mut out,
                            Violation {
                                subject: id.clone(),
                                invariant: "one terminal webhook",
                                detail: format!(
                                    "the receiver got other webhook ids {extra:?} besides {message}"
                                ),
                            },
                        );
                    }
                    if rows[0].2 != "SUCCEEDED" || !got.contains_key(&message) {
                        self.add(
                            &mut out,
                            Violation {
                                subject: id.clone(),
                                invariant: "webhook delivered",
                                detail: format!(
                                    "{message} ({kind}) is {} in the outbox after {} attempts, received {} times",
                                    rows[0].2,
                                    rows[0].3,
                                    got.get(&message).map(|g| g.0).unwrap_or(0)
                                ),
                            },
                        );
                    }
                }
            }
        }
        // Webhooks for snapshots that are not final, or do not exist.
        for (id, got) in &received {
            if !snapshots
                .get(id)
                .is_some_and(|r| TERMINAL.contains(&r.status.as_str()))
            {
                self.add(
                    &mut out,
                    Violation {
                        subject: id.clone(),
                        invariant: "one terminal webhook",
                        detail: format!("webhooks {got:?} for a snapshot that is not final"),
                    },
                );
            }
        }

        // 4. The registry.
        for (id, row) in &snapshots {
            if row.node != NODE || self.registry_checked.contains(id) {
                continue;
            }
            match row.status.as_str() {
                "PUSHED" => {
                    self.registry_checked.insert(id.clone());
                    match manifest_digest(shared, &row.target).await {
                        Ok(Some(digest)) if digest == row.manifest => {}
                        Ok(Some(digest)) => self.add(
                            &mut out,
                            Violation {
                                subject: id.clone(),
                                invariant: "registry digest",
                                detail: format!(
                                    "{} serves {digest}, PUSHED says {}",
                                    row.target, row.manifest
                                ),
                            },
                        ),
                        Ok(None) => self.add(
                            &mut out,
                            Violation {
                                subject: id.clone(),
                                invariant: "registry digest",
                                detail: format!(
                                    "{} is not in the registry, PUSHED says {}",
                                    row.target, row.manifest
                                ),
                            },
                        ),
                        Err(e) => shared.note(format!("registry check of {id}: {e}")),
                    }
                }
                "CANCELLED" => {
                    self.registry_checked.insert(id.clone());
                    if let Ok(Some(digest)) = manifest_digest(shared, &row.target).await {
                        let w = format!(
                            "{id} ({}) ended CANCELLED but its tag {} exists ({digest})",
                            row.container, row.target
                        );
                        println!("  warning: {w}");
                        self.warnings.push(w);
                    }
                }
                "FAILED" => {
                    self.registry_checked.insert(id.clone());
                }
                _ => {}
            }
        }

        // 5. No desktop left paused.
        let (ok, tasks, err) = ctr(shared, &["tasks", "ls"]);
        if ok {
            for line in tasks.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if let (Some(id), Some(state)) = (fields.first(), fields.last())
                    && (*state == "PAUSED" || *state == "PAUSING")
                {
                    let last = shared
                        .rows(&format!(
                            "SELECT id, status, coalesce(failure_reason, ''), finished_at \
                             FROM snapshots WHERE container_id = '{id}' \
                             ORDER BY created_at DESC LIMIT 3"
                        ))
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| r.join(" "))
                        .collect::<Vec<_>>();
                    self.add(
                        &mut out,
                        Violation {
                            subject: id.to_string(),
                            invariant: "no desktop left paused",
                            detail: format!(
                                "task {state} with nothing in flight; its last snapshots: {}",
                                last.join("; ")
                            ),
                        },
                    );
                    // Reported once; resumed so the next rounds can use it.
                    let (resumed, _, err) = ctr(shared, &["tasks", "resume", id]);
                    shared.note(format!(
                        "resumed the paused desktop {id} after reporting it{}",
                        if resumed {
                            String::new()
                        } else {
                            format!(" (failed: {err})")
                        }
                    ));
                }
            }
        } else {
            shared.note(format!("ctr tasks ls failed: {err}"));
        }

        // 6. No agent lease older than a commit.
        let longest = shared
            .rows("SELECT coalesce(max(duration_ms), 0) FROM snapshots")
            .await
            .ok()
            .and_then(|r| {
                r.first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0);
        let bound = Duration::from_millis(longest) + Duration::from_secs(15);
        let (ok, leases, err) = ctr(shared, &["leases", "ls"]);
        if ok {
            let now = chrono::Utc::now();
            for line in leases.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 3 || !fields[2].contains("dcs.io/owner=dcs-agent") {
                    continue;
                }
                let Ok(created) = chrono::DateTime::parse_from_rfc3339(fields[1]) else {
                    continue;
                };
                let age = (now - created.with_timezone(&chrono::Utc))
                    .to_std()
                    .unwrap_or_default();
                if age > bound {
                    self.add(
                        &mut out,
                        Violation {
                            subject: format!("lease {}", fields[0]),
                            invariant: "no lease older than a commit",
                            detail: format!(
                                "{}s old (longest commit {} ms), labels {}",
                                age.as_secs(),
                                longest,
                                fields[2]
                            ),
                        },
                    );
                }
            }
        } else {
            shared.note(format!("ctr leases ls failed: {err}"));
        }
        out
    }
}

/// The digest the registry serves for a tag (`HEAD` of the manifest);
/// `None` when the tag does not exist.
async fn manifest_digest(shared: &Shared, target: &str) -> Result<Option<String>, String> {
    let (host, rest) = target
        .split_once('/')
        .ok_or_else(|| format!("unexpected target {target}"))?;
    let (repository, tag) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("unexpected target {target}"))?;
    let response = shared
        .http
        .head(format!("http://{host}/v2/{repository}/manifests/{tag}"))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.index.v1+json",
        )
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(format!("HEAD {target}: {}", response.status()));
    }
    Ok(response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(String::from))
}

/// `ctr` in the run's namespace: (success, stdout, stderr).
fn ctr(shared: &Shared, args: &[&str]) -> (bool, String, String) {
    match std::process::Command::new("ctr")
        .arg("--address")
        .arg(&shared.env.containerd_socket)
        .args(["--namespace", &shared.namespace])
        .args(args)
        .output()
    {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}
