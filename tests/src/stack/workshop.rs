//! One speaker's workshop on the whole stack: a fresh Postgres database,
//! `dcs-api` on it, a containerd namespace of its own for desktops, and
//! the tokens of speaker `alice` and an admin. Agents are started by the
//! test (`workshop.agent(node).start()`), since when and how they run is
//! what the fault tests vary.
//!
//! `Workshop::builder("faults").agent_timeout_seconds(5).start().await`

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::{AgentBuilder, Api, ApiOptions, Database, task_status};
use crate::{Ctr, TestEnv, unique};

/// How long the waits of a workshop may take at most, on a loaded machine.
const WAIT: Duration = Duration::from_secs(90);

/// A workshop to start.
#[derive(Debug)]
pub struct WorkshopBuilder {
    namespace_prefix: String,
    agent_timeout_seconds: u64,
    speaker_prefixes: Vec<String>,
}

impl WorkshopBuilder {
    /// Seconds of silence after which the API declares an agent lost
    /// (default 30).
    pub fn agent_timeout_seconds(mut self, seconds: u64) -> Self {
        self.agent_timeout_seconds = seconds;
        self
    }

    /// One more repository prefix speakers may push under (a template with
    /// `{sub}`), beside `<test registry>/workshops/{sub}`.
    pub fn speaker_prefix(mut self, prefix: &str) -> Self {
        self.speaker_prefixes.push(prefix.to_string());
        self
    }

    pub async fn start(self) -> Workshop {
        let env = TestEnv::get();
        let db = Database::fresh();
        let mut options = ApiOptions::postgres(&db, &env.registry, self.agent_timeout_seconds);
        options.speaker_prefixes.extend(self.speaker_prefixes);
        let api = Api::start(options).await;
        let ctr = Ctr::new(&env.containerd_socket, &unique(&self.namespace_prefix));
        let alice = api.token("alice", "speaker", &["workshop"]);
        let admin = api.token("root", "admin", &[]);
        Workshop {
            env,
            db,
            api,
            ctr,
            alice,
            admin,
        }
    }
}

/// A running workshop.
pub struct Workshop {
    pub env: TestEnv,
    pub db: Database,
    pub api: Api,
    /// The containerd namespace of the desktops (and of the agents).
    pub ctr: Ctr,
    /// Speaker `alice`'s token (namespace `workshop`).
    pub alice: String,
    /// An admin's token.
    pub admin: String,
}

/// Without the tokens: they are bearer credentials.
impl fmt::Debug for Workshop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workshop")
            .field("env", &self.env)
            .field("db", &self.db)
            .field("api", &self.api)
            .field("ctr", &self.ctr)
            .finish_non_exhaustive()
    }
}

impl Workshop {
    /// A workshop whose containerd namespace is named after `prefix`.
    pub fn builder(prefix: &str) -> WorkshopBuilder {
        WorkshopBuilder {
            namespace_prefix: prefix.to_string(),
            agent_timeout_seconds: 30,
            speaker_prefixes: Vec::new(),
        }
    }

    /// An agent on node `node` serving the workshop's namespace.
    pub fn agent(&self, node: &str) -> AgentBuilder<'_> {
        super::Agent::builder(&self.env, &self.api, node, &self.ctr.namespace)
    }

    /// A running desktop of alice's (its own pod), holding `megabytes` of
    /// random data to make its commit take a while; its container id.
    pub fn desktop(&self, megabytes: u32) -> String {
        let busybox = self.ctr.import_busybox("overlayfs");
        let desk = unique("desk");
        self.ctr
            .desktop(&desk, busybox)
            .pod(&unique("pod"))
            .owner("alice")
            .start();
        if megabytes > 0 {
            self.write_random(&desk, megabytes);
        }
        desk
    }

    /// Writes `megabytes` of random (incompressible) data into the desktop.
    pub fn write_random(&self, desk: &str, megabytes: u32) {
        self.ctr.exec(
            desk,
            &format!("dd if=/dev/urandom of=/root/big bs=1M count={megabytes} 2>/dev/null"),
        );
    }

    /// A target under alice's prefix, in a repository of this workshop.
    pub fn target(&self, tag: &str) -> String {
        format!(
            "{}/workshops/alice/{}:{tag}",
            self.env.registry, self.ctr.namespace
        )
    }

    /// Waits until alice sees the desktop running (an agent reported it).
    pub async fn wait_for_container(&self, desk: &str) {
        self.api.wait_for_running_container(&self.alice, desk).await;
    }

    /// Alice's `createSnapshot` of `desk` to `target`; the new id.
    pub async fn create(&self, desk: &str, target: &str) -> String {
        self.api.create_snapshot(&self.alice, desk, target).await
    }

    /// The snapshot as alice sees it.
    pub async fn snapshot(&self, id: &str) -> Value {
        self.api.snapshot(&self.alice, id).await
    }

    /// Waits until the snapshot's status is one of `statuses`; returns it.
    pub async fn wait_status(&self, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        self.api
            .wait_for_status(&self.alice, id, statuses, timeout)
            .await
    }

    /// The node as the admin's `nodes` query shows it (`Null` if absent).
    pub async fn node(&self, name: &str) -> Value {
        let data = self.api.data(&self.admin, NODES, json!({})).await;
        find_node(&data, name).cloned().unwrap_or(Value::Null)
    }

    /// Waits until node `name` is READY and, with `registered_after`, has
    /// registered after that time (a restarted agent); returns the node.
    pub async fn wait_for_ready_node(&self, name: &str, registered_after: Option<&str>) -> Value {
        let data = self
            .api
            .wait_for(&self.admin, NODES, json!({}), WAIT, |d| {
                find_node(d, name).is_some_and(|n| {
                    n["state"] == "READY"
                        && registered_after.is_none_or(|before| {
                            n["registeredAt"].as_str().is_some_and(|at| at > before)
                        })
                })
            })
            .await;
        find_node(&data, name).cloned().unwrap_or(Value::Null)
    }

    /// The kinds of the snapshot's recorded events, in order.
    pub fn event_kinds(&self, id: &str) -> Vec<String> {
        self.db
            .query(&format!(
                "SELECT kind FROM snapshot_events WHERE snapshot_id = '{id}' ORDER BY id"
            ))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Exactly one terminal event was recorded for the snapshot, of this
    /// kind (so one terminal webhook was queued with it).
    pub fn assert_one_end(&self, id: &str, kind: &str) {
        let kinds = self.event_kinds(id);
        let terminal: Vec<&String> = kinds
            .iter()
            .filter(|k| ["PUSHED", "FAILED", "CANCELLED"].contains(&k.as_str()))
            .collect();
        assert_eq!(terminal, [kind], "terminal events of {id}: {kinds:?}");
    }

    /// The desktop's task status, waiting up to `timeout` for it to be
    /// RUNNING (a paused desktop is resumed by an agent in its own time).
    pub async fn wait_task_running(&self, desk: &str, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = task_status(&self.ctr, desk);
            if status.as_deref() == Some("RUNNING") || tokio::time::Instant::now() >= deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The desktop is running, not paused, within `timeout`.
    pub async fn assert_desktop_runs(&self, desk: &str, timeout: Duration) {
        let status = self.wait_task_running(desk, timeout).await;
        assert_eq!(status.as_deref(), Some("RUNNING"), "desktop {desk}");
    }
}

/// The first 100 nodes: more than any test starts.
const NODES: &str =
    "{ nodes(first: 100) { edges { node { name state registeredAt lastSeenAt } } } }";

fn find_node<'a>(data: &'a Value, name: &str) -> Option<&'a Value> {
    data["nodes"]["edges"]
        .as_array()?
        .iter()
        .map(|edge| &edge["node"])
        .find(|n| n["name"] == name)
}
