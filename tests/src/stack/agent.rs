//! A running `dcs-agent serve` against the test containerd, started by
//! [`AgentBuilder`]: `Agent::start(..)` for the defaults,
//! `Agent::builder(..).args(..).wrapper(..).start()` for more.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::Process;
use super::{Api, free_port, http_client, jwt};
use crate::{TestEnv, unique};

/// A running `dcs-agent serve`.
#[derive(Debug)]
pub struct Agent {
    process: Process,
    pub node: String,
    pub port: u16,
    args: Vec<String>,
    /// A program the agent runs under (e.g. `faketime`), with its arguments.
    wrapper: Vec<String>,
    /// Environment variables of every run (see `AgentBuilder::env`).
    variables: Vec<(String, String)>,
}

/// An agent to start on node `node`, serving containerd namespace
/// `namespace`, registered with `api`.
#[derive(Debug)]
pub struct AgentBuilder<'a> {
    env: &'a TestEnv,
    api: &'a Api,
    node: String,
    namespace: String,
    extra: Vec<String>,
    wrapper: Vec<String>,
    variables: Vec<(String, String)>,
}

impl AgentBuilder<'_> {
    /// An environment variable of the agent process (and of its restarts).
    /// The OpenTelemetry endpoint is not inherited from the test's
    /// environment: a test that wants traces sets it here.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.variables.push((name.to_string(), value.to_string()));
        self
    }

    /// More arguments for `dcs-agent serve`; a flag given here replaces the
    /// same flag of the defaults (except the repeatable
    /// `--insecure-registry`, which is added).
    pub fn args<S: AsRef<str>>(mut self, extra: impl IntoIterator<Item = S>) -> Self {
        self.extra
            .extend(extra.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Runs the agent under `wrapper` (a program and its arguments, e.g.
    /// `faketime -f -120s` for a node whose clock is off).
    pub fn wrapper<S: AsRef<str>>(mut self, wrapper: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = wrapper
            .into_iter()
            .map(|w| w.as_ref().to_string())
            .collect();
        self
    }

    pub fn start(self) -> Agent {
        let port = free_port();
        let mut args: Vec<String> = [
            "serve",
            "--containerd-socket",
            &self.env.containerd_socket.to_string_lossy(),
            "--namespace",
            &self.namespace,
            "--node-name",
            &self.node,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-url",
            &self.api.url,
            "--shared-secret-file",
            &self.api.agent_secret_file().to_string_lossy(),
            "--insecure-registry",
            &self.env.registry,
            "--insecure-registry",
            &self.env.auth_registry,
            "--state-dir",
            &self.env.state_dir.to_string_lossy(),
            "--heartbeat-seconds",
            "1",
            "--shutdown-grace-seconds",
            "20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for flag in self.extra.iter().filter(|a| a.starts_with("--")) {
            if flag == "--insecure-registry" {
                continue;
            }
            if let Some(at) = args.iter().position(|a| a == flag) {
                args.drain(at..at + 2);
            }
        }
        args.extend(self.extra);
        let mut agent = Agent {
            process: Process::not_started(Default::default()),
            node: self.node,
            port,
            args,
            wrapper: self.wrapper,
            variables: self.variables,
        };
        agent.launch(&self.api.data_dir);
        agent
    }
}

impl Agent {
    pub fn builder<'a>(
        env: &'a TestEnv,
        api: &'a Api,
        node: &str,
        namespace: &str,
    ) -> AgentBuilder<'a> {
        AgentBuilder {
            env,
            api,
            node: node.to_string(),
            namespace: namespace.to_string(),
            extra: Vec::new(),
            wrapper: Vec::new(),
            variables: Vec::new(),
        }
    }

    /// An agent with the default arguments.
    pub fn start(env: &TestEnv, api: &Api, node: &str, namespace: &str) -> Self {
        Self::builder(env, api, node, namespace).start()
    }

    fn launch(&mut self, log_dir: &Path) {
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(crate::agent_binary());
                command
            }
            None => Command::new(crate::agent_binary()),
        };
        crate::otlp_receiver::forget_inherited_endpoints(&mut command);
        command
            .env("RUST_LOG", "info")
            .env_remove("DCS_CONTAINERD_SOCKET")
            .envs(self.variables.iter().map(|(k, v)| (k, v)))
            .args(&self.args);
        let log = log_dir.join(format!("agent-{}-{}.log", self.node, unique("run")));
        self.process = Process::spawn(command, log);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...) to the agent process.
    pub fn signal(&mut self, signal: &str) {
        self.process.signal(signal);
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.process.signal("TERM");
        self.process.wait(timeout)
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self, api: &Api) {
        self.process.kill();
        self.launch(&api.data_dir);
    }

    /// The process id of the running agent.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The whole log of the current process.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// A token such as the API sends to this agent.
    pub fn api_token(&self, api: &Api) -> String {
        jwt::hs256(
            &api.agent_secret(),
            &jwt::service_claims("dcs-api", "dcs-agent", &self.node),
        )
    }

    /// The agent's `/metrics`, fetched with the API's credentials.
    pub async fn metrics(&self, api: &Api) -> String {
        super::fetch_metrics(&http_client(), &self.url(), Some(&self.api_token(api))).await
    }
}
