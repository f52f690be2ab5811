//! The processes of the chaos stack: two `dcs-api` replicas on one
//! database, one `dcs-agent`, and a TCP front (what a Kubernetes Service
//! is) through which the agent reaches whichever replica is up.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dcs_protocol::token::{AGENT_AUDIENCE, SharedSecret};
use tokio::net::{TcpListener, TcpStream};

/// The directory of the binaries the run uses: that of
/// `DCS_TEST_AGENT_BINARY` when it is set (an older build, API included),
/// else this build's.
pub fn bin_dir() -> PathBuf {
    if let Some(agent) = std::env::var_os("DCS_TEST_AGENT_BINARY")
        && let Some(dir) = Path::new(&agent).parent()
    {
        return dir.to_path_buf();
    }
    crate::build_dir()
}

pub fn binary(name: &str) -> Result<PathBuf, String> {
    crate::binary_in(&bin_dir(), name)
}

/// Processes (a pid) and process groups (a negative pgid) this run
/// started and has not reaped, so that an interrupted run can end them.
static LIVE: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

pub(crate) fn track(id: i32) {
    LIVE.lock().expect("live").push(id);
}

pub(crate) fn untrack(id: i32) {
    LIVE.lock().expect("live").retain(|x| *x != id);
}

/// SIGKILLs every process and process group the run started (for an
/// interrupted run: Ctrl-C of `chaos`).
pub fn kill_everything_started() {
    for id in LIVE.lock().expect("live").drain(..) {
        if let Some(pid) = rustix::process::Pid::from_raw(id.abs()) {
            let _ = if id < 0 {
                rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
            } else {
                rustix::process::kill_process(pid, rustix::process::Signal::KILL)
            };
        }
    }
}

/// Copies of this build's `dcs-api` and `dcs-agent` in `dir`: restarts
/// during the run use them, whatever is rebuilt meanwhile.
pub fn copy_binaries(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for name in ["dcs-api", "dcs-agent"] {
        let to = dir.join(name);
        std::fs::copy(binary(name)?, &to).map_err(|e| format!("copy {name}: {e}"))?;
        out.push(to);
    }
    Ok((out[0].clone(), out[1].clone()))
}

/// One child process, restarted any number of times; logs go to
/// `<dir>/<name>-<n>.log`.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    dir: PathBuf,
    child: Option<Child>,
    runs: usize,
    log: PathBuf,
}

impl Proc {
    pub fn new(name: &str, dir: &Path) -> Self {
        Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            child: None,
            runs: 0,
            log: PathBuf::new(),
        }
    }

    fn spawn(&mut self, mut command: Command) -> Result<(), String> {
        self.runs += 1;
        self.log = self.dir.join(format!("{}-{}.log", self.name, self.runs));
        let file = File::create(&self.log).map_err(|e| e.to_string())?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.name))?;
        track(child.id() as i32);
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would; waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            untrack(child.id() as i32);
        }
    }

    /// `Some(status)` once the process has exited by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        if let Some(child) = self.child.take() {
            untrack(child.id() as i32);
        }
        Some(status)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn runs(&self) -> usize {
        self.runs
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn healthy(http: &reqwest::Client, url: &str, token: Option<&str>) -> bool {
    let mut request = http.get(url).timeout(Duration::from_secs(2));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    matches!(request.send().await, Ok(r) if r.status().is_success())
}

/// A `dcs-api` replica.
#[derive(Debug)]
pub struct ApiReplica {
    pub name: String,
    pub port: u16,
    pub url: String,
    proc: Proc,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

impl ApiReplica {
    pub fn new(
        name: &str,
        dir: &Path,
        binary: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let port = crate::stack::free_port();
        let data_dir = dir.join(name);
        std::fs::create_dir_all(&data_dir).expect("replica data dir");
        let mut all = vec![
            "--data-dir".to_string(),
            data_dir.to_string_lossy().to_string(),
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        all.extend(args);
        Self {
            name: name.to_string(),
            port,
            url: format!("http://127.0.0.1:{port}"),
            proc: Proc::new(name, dir),
            binary,
            args: all,
            env,
            http: crate::stack::http_client(),
        }
    }

    /// Starts it and waits for `/healthz`; an API that cannot start (its
    /// database is down) exits, and this says why.
    pub async fn start(&mut self) -> Result<(), String> {
        self.proc.kill();
        let mut command = Command::new(&self.binary);
        command
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info,tower_http=warn,sqlx=warn")
            .args(&self.args);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.proc.spawn(command)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if healthy(&self.http, &format!("{}/healthz", self.url), None).await {
                return Ok(());
            }
            if let Some(status) = self.proc.exited() {
                return Err(format!(
                    "{} exited while starting ({status}):\n{}",
                    self.name,
                    self.proc.log_tail(15)
                ));
            }
            if Instant::now() > deadline {
                self.proc.kill();
                return Err(format!("{} did not answer /healthz in 30 s", self.name));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// The `dcs-agent serve` process.
#[derive(Debug)]
pub struct AgentProc {
    pub node: String,
    pub port: u16,
    proc: Proc,
    binary: PathBuf,
    args: Vec<String>,
    http: reqwest::Client,
    secret: SharedSecret,
}

impl AgentProc {
    /// `secret`: the one shared with the API (the agent answers only
    /// requests signed with it, `/healthz` included).
    pub fn new(
        node: &str,
        dir: &Path,
        binary: PathBuf,
        args: Vec<String>,
        secret: SharedSecret,
    ) -> Self {
        let port = crate::stack::free_port();
        let mut all = vec![
            "serve".to_string(),
            "--node-name".into(),
            node.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        all.extend(args);
        Self {
            node: node.to_string(),
            port,
            proc: Proc::new("agent", dir),
            binary,
            args: all,
            http: crate::stack::http_client(),
            secret,
        }
    }

    pub async fn start(&mut self) -> Result<(), String> {
        self.proc.kill();
        let mut command = Command::new(&self.binary);
        command
            .env("RUST_LOG", "info")
            .env_remove("DCS_CONTAINERD_SOCKET")
            .args(&self.args);
        self.proc.spawn(command)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let token = self.secret.sign("dcs-api", AGENT_AUDIENCE, &self.node);
            let url = format!("http://127.0.0.1:{}/healthz", self.port);
            if healthy(&self.http, &url, Some(&token)).await {
                return Ok(());
            }
            if let Some(status) = self.proc.exited() {
                return Err(format!(
                    "the agent exited while starting ({status}):\n{}",
                    self.proc.log_tail(15)
                ));
            }
            if Instant::now() > deadline {
                self.proc.kill();
                return Err("the agent did not answer /healthz in 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// A TCP front for the replicas: each connection goes to the next backend
/// that accepts it.
#[derive(Debug)]
pub struct Front {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    pub async fn start(backends: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let port = listener.local_addr().expect("front address").port();
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(backends);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let backends = backends.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let port = backends[(first + i) % backends.len()];
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            task,
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}
