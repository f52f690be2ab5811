//! The chaos harness (issue 9, item 4): snapshot flows on the real stack
//! (a private Postgres, two `dcs-api` replicas on one database, one
//! `dcs-agent` on the test containerd, the test registry, a webhook
//! receiver) while the replicas, the agent and Postgres are killed and
//! restarted at seeded random moments; after each round, once every part
//! is back, the invariants are checked (see [`check`]).
//!
//! Used by `src/bin/chaos.rs` (`scripts/chaos.sh`) and by the CI round in
//! `tests/chaos.rs`.

pub mod check;
mod flows;
pub mod parts;
pub mod pg;
pub mod probe;
pub mod receiver;
pub mod report;
pub mod rng;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stack::jwt;
use crate::{Ctr, TestEnv, unique};
use parts::{AgentProc, ApiReplica, Front};
use pg::{PgCrash, Postgres};
use report::{CrashPoint, Report};
use rng::Rng;

/// The node name of the real agent.
pub const NODE: &str = "chaos-node";
/// The statuses of a snapshot still in flight.
pub const IN_FLIGHT: [&str; 3] = ["QUEUED", "DIFFING", "PUSHING"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Kills in all.
    pub crash_points: usize,
    /// Kills per round (a check follows every round).
    pub per_round: usize,
    /// Desktops taking snapshots in parallel.
    pub desktops: usize,
    /// Run the API with `DCS_TEST_UNGUARDED_TRANSITIONS=1`: the checker
    /// must then report violations.
    pub unguarded: bool,
    /// Once every part is back, a snapshot must be final within this.
    pub terminal_bound: Duration,
    /// Chance that a flow also cancels its snapshot at a random moment.
    pub cancel_chance: f64,
    /// Snapshots of the race probe (fake agent) per round; 0: none.
    pub probe_snapshots: usize,
    /// Milliseconds between kills (uniform in this range).
    pub gap_ms: (u64, u64),
    /// Milliseconds a killed part stays down (uniform in this range).
    pub down_ms: (u64, u64),
    /// Largest change written before a snapshot, in KiB.
    pub max_change_kib: u64,
}

impl Options {
    pub fn new(seed: u64, crash_points: usize) -> Self {
        Self {
            seed,
            crash_points,
            per_round: 25,
            desktops: 4,
            unguarded: false,
            terminal_bound: Duration::from_secs(60),
            cancel_chance: 0.1,
            probe_snapshots: 12,
            gap_ms: (300, 1500),
            down_ms: (0, 1200),
            max_change_kib: 6 * 1024,
        }
    }
}

/// A seed from the clock, for runs that are not given one.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Rng::new(nanos ^ u64::from(std::process::id())).next_u64() % 1_000_000_000
}

/// A part of the stack that gets killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    ApiA,
    ApiB,
    Agent,
    Postgres,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::ApiA, Target::ApiB, Target::Agent, Target::Postgres];

    pub fn name(self) -> &'static str {
        match self {
            Target::ApiA => "api-a",
            Target::ApiB => "api-b",
            Target::Agent => "agent",
            Target::Postgres => "postgres",
        }
    }
}

/// One planned kill.
#[derive(Debug, Clone)]
pub struct Planned {
    pub gap: Duration,
    pub target: Target,
    pub down: Duration,
    pub pg_crash: PgCrash,
}

/// The whole schedule of kills for a seed: the same seed, the same
/// schedule.
pub fn schedule(seed: u64, crash_points: usize, options: &Options) -> Vec<Planned> {
    let mut rng = Rng::new(seed ^ 0x5eed_c4a0);
    (0..crash_points)
        .map(|_| {
            // Replicas a bit more often than the agent and Postgres.
            let target = match rng.below(10) {
                0..=2 => Target::ApiA,
                3..=5 => Target::ApiB,
                6..=7 => Target::Agent,
                _ => Target::Postgres,
            };
            Planned {
                gap: Duration::from_millis(rng.range(options.gap_ms.0, options.gap_ms.1)),
                target,
                down: Duration::from_millis(rng.range(options.down_ms.0, options.down_ms.1)),
                pg_crash: if rng.chance(0.5) {
                    PgCrash::KillGroup
                } else {
                    PgCrash::Immediate
                },
            }
        })
        .collect()
}

/// What the monitor last read from the database.
#[derive(Default)]
pub(crate) struct Monitor {
    /// Completed reads.
    pub generation: u64,
    /// Snapshot id -> status, of the snapshots in flight.
    pub in_flight: HashMap<String, String>,
}

/// The running stack, shared by the tasks of a run.
pub(crate) struct Shared {
    pub env: TestEnv,
    pub apis: [tokio::sync::Mutex<ApiReplica>; 2],
    pub api_urls: [String; 2],
    pub agent: tokio::sync::Mutex<AgentProc>,
    pub pg: Arc<Mutex<Postgres>>,
    pub db: String,
    pub namespace: String,
    pub down: Mutex<HashSet<Target>>,
    pub monitor: Mutex<Monitor>,
    pub notes: Mutex<Vec<String>>,
    pub http: reqwest::Client,
    pub alice: String,
    pub admin: String,
    pub agent_secret: Vec<u8>,
    pub started: Instant,
    pub stop: AtomicBool,
    pub flows: AtomicU64,
    pub cancels: AtomicU64,
    /// (part, from the kill until it was up again).
    pub recoveries: Mutex<Vec<(Target, Duration)>>,
}

impl Shared {
    pub(crate) fn note(&self, text: String) {
        println!("  note: {text}");
        self.notes.lock().expect("notes").push(text);
    }

    pub(crate) fn elapsed(&self) -> String {
        format!("{:.1}s", self.started.elapsed().as_secs_f64())
    }

    /// SQL on the run's database, off the async threads.
    pub(crate) async fn rows(&self, query: &str) -> Result<Vec<Vec<String>>, String> {
        let db = self.db.clone();
        let query = query.to_string();
        tokio::task::spawn_blocking(move || pg::rows(&db, &query))
            .await
            .map_err(|e| e.to_string())?
    }

    /// GraphQL on replica `i`; `Err` when the replica does not answer.
    pub(crate) async fn graphql(
        &self,
        i: usize,
        token: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}/graphql", self.api_urls[i]))
            .bearer_auth(token)
            .timeout(Duration::from_secs(15))
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        response.json().await.map_err(|e| e.to_string())
    }

    /// Kills a part (marking it down first, so the supervisor does not
    /// take the kill for a crash of its own).
    pub(crate) async fn kill(&self, target: Target, how: PgCrash) {
        self.down.lock().expect("down").insert(target);
        match target {
            Target::ApiA => self.apis[0].lock().await.proc().kill(),
            Target::ApiB => self.apis[1].lock().await.proc().kill(),
            Target::Agent => self.agent.lock().await.proc().kill(),
            Target::Postgres => {
                let pg = self.pg.clone();
                let _ =
                    tokio::task::spawn_blocking(move || pg.lock().expect("pg").crash(how)).await;
            }
        }
    }

    /// Starts a part again, retrying (a replica cannot start while
    /// Postgres is down) for up to two minutes.
    pub(crate) async fn restart(&self, target: Target) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let result = match target {
                Target::ApiA => self.apis[0].lock().await.start().await,
                Target::ApiB => self.apis[1].lock().await.start().await,
                Target::Agent => self.agent.lock().await.start().await,
                Target::Postgres => {
                    let pg = self.pg.clone();
                    tokio::task::spawn_blocking(move || pg.lock().expect("pg").start())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r)
                }
            };
            match result {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    self.note(format!(
                        "{} could not be restarted for 2 minutes: {e}",
                        target.name()
                    ));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        self.down.lock().expect("down").remove(&target);
    }

    pub(crate) fn is_down(&self, target: Target) -> bool {
        self.down.lock().expect("down").contains(&target)
    }

    pub(crate) fn any_down(&self) -> bool {
        !self.down.lock().expect("down").is_empty()
    }

    /// The statuses of the snapshots in flight right now (fresh from the
    /// database when it is up, else the monitor's last read).
    pub(crate) async fn phases_now(&self) -> Vec<String> {
        if !self.is_down(Target::Postgres) {
            let q = "SELECT status FROM snapshots WHERE status IN ('QUEUED','DIFFING','PUSHING')";
            if let Ok(rows) = self.rows(q).await {
                return rows
                    .into_iter()
                    .filter_map(|r| r.into_iter().next())
                    .collect();
            }
        }
        self.monitor
            .lock()
            .expect("monitor")
            .in_flight
            .values()
            .cloned()
            .collect()
    }
}

const CREATE_ENDPOINT: &str = "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret endpoint { id } } }";

fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

fn write_secret(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("write secret");
    let mut perms = std::fs::metadata(path).expect("secret").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(path, perms).expect("secret mode");
}

/// Watches the database: the snapshots in flight, five times a second.
async fn monitor(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let q = "SELECT id, status FROM snapshots WHERE status IN ('QUEUED','DIFFING','PUSHING')";
        if let Ok(rows) = shared.rows(q).await {
            let mut m = shared.monitor.lock().expect("monitor");
            m.in_flight = rows
                .into_iter()
                .filter(|r| r.len() == 2)
                .map(|r| (r[0].clone(), r[1].clone()))
                .collect();
            m.generation += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Restarts a part that died by itself (not killed by the schedule), and
/// notes it: a process should not exit because another one did.
async fn supervisor(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut died = Vec::new();
        {
            let mut down = shared.down.lock().expect("down");
            for target in Target::ALL {
                if down.contains(&target) {
                    continue;
                }
                let exited =
                    match target {
                        Target::ApiA | Target::ApiB => {
                            let i = usize::from(target == Target::ApiB);
                            shared.apis[i].try_lock().ok().and_then(|mut a| {
                                a.proc()
                                    .exited()
                                    .map(|s| format!("{s}; log:\n{}", a.proc().log_tail(12)))
                            })
                        }
                        Target::Agent => shared.agent.try_lock().ok().and_then(|mut a| {
                            a.proc()
                                .exited()
                                .map(|s| format!("{s}; log:\n{}", a.proc().log_tail(12)))
                        }),
                        Target::Postgres => shared.pg.try_lock().ok().and_then(|mut p| {
                            (!p.running()).then(|| "postmaster gone".to_string())
                        }),
                    };
                if let Some(why) = exited {
                    down.insert(target);
                    died.push((target, why));
                }
            }
        }
        for (target, why) in died {
            shared.note(format!(
                "{} exited by itself at {} (not killed by the schedule): {why}",
                target.name(),
                shared.elapsed()
            ));
            shared.restart(target).await;
        }
    }
}

/// Runs the harness; the report's `violations` say whether the invariants
/// held.
pub async fn run(options: Options) -> Result<Report, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    println!(
        "chaos: seed {} ({} crash points, {} per round, {} desktops{})",
        options.seed,
        options.crash_points,
        options.per_round,
        options.desktops,
        if options.unguarded {
            ", API with DCS_TEST_UNGUARDED_TRANSITIONS=1"
        } else {
            ""
        }
    );
    let env = TestEnv::get();
    for tool in ["ctr", "psql", "skopeo"] {
        if std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Err(format!(
                "{tool} is missing: run `scripts/dev-env.sh start` (it installs the test tools)"
            ));
        }
    }
    let registry_up = crate::stack::http_client()
        .get(format!("http://{}/v2/", env.registry))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if !registry_up {
        return Err(format!(
            "the registry {} does not answer: run `scripts/dev-env.sh start`",
            env.registry
        ));
    }
    let dir = std::env::temp_dir().join(unique("dcs-chaos"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (api_binary, agent_binary) = parts::copy_binaries(&dir.join("bin"))?;
    println!("chaos: logs and state in {}", dir.display());

    // Postgres, private to this run.
    let pg_port = crate::stack::free_port();
    let pg = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || Postgres::init(&dir, pg_port)
    })
    .await
    .map_err(|e| e.to_string())??;
    let db = pg.url.clone();

    // Secrets both replicas and the agent share.
    let jwt_secret = random_hex(32);
    let agent_secret = random_hex(32);
    let jwt_file = dir.join("jwt-secret");
    let agent_file = dir.join("agent-secret");
    write_secret(&jwt_file, &jwt_secret);
    write_secret(&agent_file, &agent_secret);

    let api_args = vec![
        "--database-url".to_string(),
        db.clone(),
        "--jwt-secret-file".into(),
        jwt_file.to_string_lossy().to_string(),
        "--agent-secret-file".into(),
        agent_file.to_string_lossy().to_string(),
        "--agent-timeout-seconds".into(),
        "5".into(),
        "--speaker-repository-prefix".into(),
        format!("{}/workshops/{{sub}}", env.registry),
        // Images pushed for snapshots that ended without one are removed.
        "--insecure-registry".into(),
        env.registry.clone(),
        "--webhook-allow".into(),
        "127.0.0.0/8".into(),
        "--webhook-allow-http".into(),
        "--webhook-timeout-seconds".into(),
        "2".into(),
        "--webhook-claim-seconds".into(),
        "2".into(),
    ];
    let mut api_env = Vec::new();
    if options.unguarded {
        api_env.push((
            "DCS_TEST_UNGUARDED_TRANSITIONS".to_string(),
            "1".to_string(),
        ));
    }
    let mut a = ApiReplica::new(
        "api-a",
        &dir,
        api_binary.clone(),
        api_args.clone(),
        api_env.clone(),
    );
    let mut b = ApiReplica::new("api-b", &dir, api_binary, api_args, api_env);
    a.start().await?;
    b.start().await?;
    let front = Front::start(vec![a.port, b.port]).await;
    let api_urls = [a.url.clone(), b.url.clone()];

    // The desktops.
    let namespace = unique("chaos");
    let ctr = Ctr::new(&env.containerd_socket, &namespace);
    let image = ctr.import_busybox("overlayfs");
    let mut desktops: Vec<String> = (0..options.desktops)
        .map(|i| {
            let id = unique(&format!("desk{i}"));
            ctr.desktop(&id, image)
                .pod(&format!("desktop-{i}"))
                .owner("alice")
                .start();
            id
        })
        .collect();

    let state_dir = dir.join("agent-state");
    std::fs::create_dir_all(&state_dir).map_err(|e| e.to_string())?;
    let mut agent = AgentProc::new(
        NODE,
        &dir,
        agent_binary,
        vec![
            "--containerd-socket".into(),
            env.containerd_socket.to_string_lossy().to_string(),
            "--namespace".into(),
            namespace.clone(),
            "--api-url".into(),
            front.url.clone(),
            "--shared-secret-file".into(),
            agent_file.to_string_lossy().to_string(),
            "--insecure-registry".into(),
            env.registry.clone(),
            "--state-dir".into(),
            state_dir.to_string_lossy().to_string(),
            "--heartbeat-seconds".into(),
            "1".into(),
            "--shutdown-grace-seconds".into(),
            "5".into(),
            "--max-concurrent-jobs".into(),
            options.desktops.to_string(),
        ],
        dcs_protocol::token::SharedSecret::new(agent_secret.as_bytes().to_vec())
            .map_err(|e| e.to_string())?,
    );
    agent.start().await?;

    let secret = jwt_secret.as_bytes();
    let alice = jwt::hs256(secret, &jwt::user_claims("alice", "speaker", &["workshop"]));
    let admin = jwt::hs256(secret, &jwt::user_claims("root", "admin", &[]));
    let shared = Arc::new(Shared {
        env: env.clone(),
        apis: [tokio::sync::Mutex::new(a), tokio::sync::Mutex::new(b)],
        api_urls,
        agent: tokio::sync::Mutex::new(agent),
        pg: Arc::new(Mutex::new(pg)),
        db,
        namespace: namespace.clone(),
        down: Mutex::new(HashSet::new()),
        monitor: Mutex::new(Monitor::default()),
        notes: Mutex::new(Vec::new()),
        http: crate::stack::http_client(),
        alice,
        admin,
        agent_secret: agent_secret.as_bytes().to_vec(),
        started,
        stop: AtomicBool::new(false),
        flows: AtomicU64::new(0),
        cancels: AtomicU64::new(0),
        recoveries: Mutex::new(Vec::new()),
    });

    // The webhook endpoint.
    let receiver = receiver::start().await;
    let created = shared
        .graphql(
            0,
            &shared.admin,
            CREATE_ENDPOINT,
            json!({"input": {"url": receiver.url("/hook"), "eventTypes": ["SNAPSHOT_PUSHED", "SNAPSHOT_FAILED"], "description": "chaos receiver"}}),
        )
        .await?;
    let endpoint = created["data"]["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .ok_or_else(|| format!("createWebhookEndpoint: {created}"))?
        .to_string();

    // Every desktop known to the API before the first flow.
    wait_known(&shared, &desktops).await?;

    let monitor_task = tokio::spawn(monitor(shared.clone()));
    let supervisor_task = tokio::spawn(supervisor(shared.clone()));
    let fake = if options.probe_snapshots > 0 {
        Some(probe::FakeAgent::start(shared.clone()).await?)
    } else {
        None
    };

    let plan = schedule(options.seed, options.crash_points, &options);
    let mut flow_rng = Rng::new(options.seed ^ 0xf10f_5eed);
    let mut checker = check::Checker::new(endpoint.clone(), options.terminal_bound);
    let mut crash_points: Vec<CrashPoint> = Vec::new();
    let rounds = options
        .crash_points
        .div_ceil(options.per_round.max(1))
        .max(1);
    let mut settle_max = Duration::ZERO;
    let mut probe_stats = probe::Stats::default();
    for round in 1..=rounds {
        let round_started = Instant::now();
        let creating = Arc::new(AtomicBool::new(true));
        let workers: Vec<_> = desktops
            .iter()
            .enumerate()
            .map(|(i, desk)| {
                tokio::spawn(flows::worker(
                    shared.clone(),
                    creating.clone(),
                    desk.clone(),
                    i,
                    round,
                    flow_rng.fork(),
                    options.clone(),
                ))
            })
            .collect();

        let start = (round - 1) * options.per_round;
        let end = (start + options.per_round).min(plan.len());
        let mut restarts = Vec::new();
        for (n, planned) in plan[start..end].iter().enumerate() {
            tokio::time::sleep(planned.gap).await;
            // The planned target may still be down from an earlier kill.
            while shared.is_down(planned.target) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // A kill is a crash point only when a flow is in flight.
            let wait_until = Instant::now() + Duration::from_secs(5);
            let mut phases = shared.phases_now().await;
            while phases.is_empty() && Instant::now() < wait_until {
                tokio::time::sleep(Duration::from_millis(50)).await;
                phases = shared.phases_now().await;
            }
            shared.kill(planned.target, planned.pg_crash).await;
            crash_points.push(CrashPoint {
                round,
                index: start + n + 1,
                target: planned.target,
                phases,
                at: shared.started.elapsed(),
                down: planned.down,
                pg_crash: planned.pg_crash,
                wall: chrono::Utc::now(),
            });
            let s = shared.clone();
            let target = planned.target;
            let down = planned.down;
            restarts.push(tokio::spawn(async move {
                let killed = Instant::now();
                tokio::time::sleep(down).await;
                s.restart(target).await;
                s.recoveries
                    .lock()
                    .expect("recoveries")
                    .push((target, killed.elapsed()));
            }));
        }
        for r in restarts {
            let _ = r.await;
        }
        while shared.any_down() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let parts_back = Instant::now();
        creating.store(false, Ordering::Relaxed);
        for w in workers {
            let _ = w.await;
        }

        // The race probe, with every part up.
        if let Some(fake) = &fake {
            let stats = fake.race(round, options.probe_snapshots).await;
            probe_stats.add(&stats);
        }

        // Settle: every snapshot final within the bound.
        let settle =
            check::settle(&shared, parts_back, options.terminal_bound, &checker.stuck).await;
        settle_max = settle_max.max(settle.took);
        let stuck = checker.not_final(&settle.stuck);
        // A desktop whose snapshot never ends cannot take another one (the
        // API refuses a second in flight): the next rounds use a new one.
        for (_, _, container) in &settle.stuck {
            if let Some(i) = desktops.iter().position(|d| d == container) {
                let id = unique(&format!("desk{i}"));
                ctr.desktop(&id, image)
                    .pod(&format!("desktop-{i}-r{round}"))
                    .owner("alice")
                    .start();
                shared.note(format!(
                    "desktop {i} ({container}) is blocked by a snapshot that never ends; \
                     replaced by {id}"
                ));
                desktops[i] = id;
            }
        }
        if !settle.stuck.is_empty() {
            wait_known(&shared, &desktops).await?;
        }
        check::wait_deliveries(&shared, &endpoint, &receiver, Duration::from_secs(60)).await;
        let mut fresh = stuck;
        fresh.extend(checker.check(&shared, &receiver).await);
        println!(
            "round {round}/{rounds}: {} crash points, {:.0} s, settled in {:.1} s, {} snapshots so far, {} new violations{}",
            end - start,
            round_started.elapsed().as_secs_f64(),
            settle.took.as_secs_f64(),
            checker.snapshots_seen(),
            fresh.len(),
            if fresh.is_empty() {
                String::new()
            } else {
                format!(
                    ":\n  {}",
                    fresh
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n  ")
                )
            }
        );
    }

    shared.stop.store(true, Ordering::Relaxed);
    let _ = monitor_task.await;
    supervisor_task.abort();
    drop(fake);
    let statuses = checker.status_counts(&shared).await;
    let notes = shared.notes.lock().expect("notes").clone();
    let report = Report {
        seed: options.seed,
        unguarded: options.unguarded,
        per_round: options.per_round,
        desktops: options.desktops,
        rounds,
        crash_points,
        statuses,
        flows: shared.flows.load(Ordering::Relaxed),
        cancels: shared.cancels.load(Ordering::Relaxed),
        violations: checker.violations.clone(),
        warnings: checker.warnings.clone(),
        notes,
        probe: probe_stats,
        settle_max,
        duration: started.elapsed(),
        log_dir: dir.clone(),
        restarts: restart_counts(&shared).await,
        recovery: recovery(&shared),
    };
    let timeline: String = report
        .crash_points
        .iter()
        .map(|c| format!("{c}\n"))
        .collect();
    let _ = std::fs::write(dir.join("crash-points.txt"), timeline);
    let mut listing = String::new();
    for v in &report.violations {
        listing.push_str(&format!("{v}\n{}\n", dossier(&shared, &v.subject).await));
    }
    for w in &report.warnings {
        let subject = w.split_whitespace().next().unwrap_or_default();
        listing.push_str(&format!(
            "warning: {w}\n{}\n",
            dossier(&shared, subject).await
        ));
    }
    let _ = std::fs::write(dir.join("violations.txt"), listing);

    // Tear down: the agent first (it holds the desktops), then the rest.
    shared.agent.lock().await.proc().kill();
    for api in &shared.apis {
        api.lock().await.proc().kill();
    }
    drop(front);
    drop(ctr);
    let pg = shared.pg.clone();
    let _ = tokio::task::spawn_blocking(move || pg.lock().expect("pg").stop()).await;
    // The binaries' copies are large; the database is kept for a look only
    // when something broke (start it with `pg_ctl -D <dir>/pgdata`).
    let _ = std::fs::remove_dir_all(dir.join("bin"));
    if report.violations.is_empty() && report.warnings.is_empty() {
        let _ = std::fs::remove_dir_all(dir.join("pgdata"));
    }
    Ok(report)
}

/// What the database says of a snapshot, with times, for the listing of
/// violations (to line up with `crash-points.txt` and the process logs).
async fn dossier(shared: &Shared, id: &str) -> String {
    if uuid::Uuid::parse_str(id).is_err() {
        return String::new();
    }
    let row = shared
        .rows(&format!(
            "SELECT status, node, container_id, created_at, dispatched_at, agent_instance_id, \
             dispatch_attempts, last_event_seq, updated_at, finished_at, failure_code, \
             failure_reason FROM snapshots WHERE id = '{id}'"
        ))
        .await
        .unwrap_or_default()
        .into_iter()
        .next()
        .unwrap_or_default();
    let names = [
        "status",
        "node",
        "container",
        "created",
        "dispatched",
        "instance",
        "attempts",
        "last seq",
        "updated",
        "finished",
        "failure code",
        "failure reason",
    ];
    let mut out: String = names
        .iter()
        .zip(row.iter())
        .map(|(n, v)| format!("    {n}: {v}\n"))
        .collect();
    for e in shared
        .rows(&format!(
            "SELECT created_at, coalesce(seq::text, '-'), kind, payload::text FROM snapshot_events \
             WHERE snapshot_id = '{id}' ORDER BY id"
        ))
        .await
        .unwrap_or_default()
    {
        out.push_str(&format!("    event {}\n", e.join(" ")));
    }
    out
}

/// Waits until the API lists every desktop as running.
async fn wait_known(shared: &Shared, desktops: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = shared
            .graphql(
                0,
                &shared.alice,
                "{ containers(first: 100) { edges { node { id state } } } }",
                json!({}),
            )
            .await
            .unwrap_or_default();
        // No page helper here: an answer of a replica being killed has no
        // page, and that is "not yet", not a failure.
        let known = data["data"]["containers"]["edges"]
            .as_array()
            .map(|edges| {
                desktops.iter().all(|d| {
                    edges
                        .iter()
                        .any(|e| e["node"]["id"] == d.as_str() && e["node"]["state"] == "running")
                })
            })
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the desktops never showed up in the API: {data}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn recovery(shared: &Shared) -> BTreeMap<&'static str, (Duration, Duration)> {
    let mut all: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    for (target, took) in shared.recoveries.lock().expect("recoveries").iter() {
        all.entry(target.name()).or_default().push(*took);
    }
    all.into_iter()
        .map(|(name, list)| {
            let total: Duration = list.iter().sum();
            let max = list.iter().max().copied().unwrap_or_default();
            (name, (total / list.len().max(1) as u32, max))
        })
        .collect()
}

async fn restart_counts(shared: &Shared) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    counts.insert("api-a", shared.apis[0].lock().await.proc().runs());
    counts.insert("api-b", shared.apis[1].lock().await.proc().runs());
    counts.insert("agent", shared.agent.lock().await.proc().runs());
    counts
}
