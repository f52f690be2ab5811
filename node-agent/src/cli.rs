//! The `dcs-agent` command line: the contract other tools rely on.
//!
//! Output is JSON on stdout; an error is one sentence on stderr with a
//! non-zero exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use dcs_support::telemetry;
use tracing::Instrument as _;

use crate::commit::{CommitError, CommitRequest, commit};
use crate::containerd::{ContainerInfo, Containerd};
use crate::image::changes::ConfigChange;
use crate::image::flatten::WantedBase;
use crate::layer::Compression;
use crate::registry::RegistryOptions;
use dcs_protocol::Acknowledgement;

#[derive(Debug, Parser)]
#[command(
    name = "dcs-agent",
    version,
    about = "Desktop customisation service node agent"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: dcs_support::logging::LogFormat,
    #[command(flatten)]
    traces: telemetry::TraceArgs,
}

/// The agent in its traces: its own spans and those of the shared crate.
const SERVICE: telemetry::Service = telemetry::Service {
    name: "dcs-agent",
    crates: &["node_agent", "dcs_support"],
};

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists the containers of a containerd namespace.
    Containers {
        #[command(flatten)]
        containerd: ContainerdArgs,
        /// Print JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Commits a container to a new image and pushes it.
    ///
    /// The layer is scanned for secrets as it is built (SSH and cloud
    /// credentials, tokens, private keys, ...; rules in the agent's
    /// scan/rules.toml; the first 1 MiB of each text file). A secret that is
    /// neither acknowledged (--acknowledge) nor excluded (--exclude) refuses
    /// the commit before anything is pushed: the findings (path, rule, line;
    /// never the value) are printed as JSON on stdout, one sentence on
    /// stderr, exit code 1.
    Commit(Box<CommitArgs>),
    /// Shows what a commit of a container would hold now, with the secret
    /// scan's findings, as JSON: counts, bytes, the 20 biggest files and
    /// directories, what each exclude removed. Reads the overlay upper
    /// directory the way a commit does, without pausing the desktop or
    /// writing anything (overlayfs snapshotter only).
    Preview(Box<PreviewArgs>),
    /// Runs the agent as a service for the API.
    Serve(Box<ServeArgs>),
    /// Checks the local agent, for Kubernetes exec probes (its HTTP
    /// endpoints answer only signed requests).
    Probe(Box<ProbeArgs>),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProbeCheck {
    /// The agent answers and containerd answers on the mounted socket.
    Live,
    /// The agent takes jobs.
    Ready,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// `live` or `ready`.
    #[arg(value_enum)]
    check: ProbeCheck,
    #[command(flatten)]
    containerd: ContainerdArgs,
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    #[arg(long, env = "DCS_AGENT_SECRET_FILE")]
    shared_secret_file: PathBuf,
    #[arg(long, env = "DCS_AGENT_LISTEN", default_value = "0.0.0.0:9443")]
    listen: std::net::SocketAddr,
    #[arg(long, default_value_t = 3)]
    timeout_seconds: u64,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    containerd: ContainerdArgs,
    /// This node's name, as Kubernetes knows it.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Address to listen on.
    #[arg(long, env = "DCS_AGENT_LISTEN", default_value = "0.0.0.0:9443")]
    listen: std::net::SocketAddr,
    /// URL the API uses to reach this agent [default: http://$POD_IP:port,
    /// or the listen address].
    #[arg(long, env = "DCS_AGENT_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Base URL of the API server.
    #[arg(long, env = "DCS_API_URL")]
    api_url: String,
    /// File holding the secret shared with the API (at least 32 bytes).
    #[arg(long, env = "DCS_AGENT_SECRET_FILE")]
    shared_secret_file: PathBuf,
    /// A `dockerconfigjson` file (Kubernetes Secret format) with credentials.
    #[arg(long, env = "DCS_REGISTRY_CONFIG")]
    registry_config: Option<PathBuf>,
    /// A registry (`host:port`) reached over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Commits run at once; more wait for a slot.
    #[arg(long, env = "DCS_AGENT_MAX_JOBS", default_value_t = 2)]
    max_concurrent_jobs: usize,
    /// Where per-container lock files are kept.
    #[arg(long, env = "DCS_AGENT_STATE_DIR", default_value = "/run/dcs-agent")]
    state_dir: PathBuf,
    /// Where new layers are kept until they are pushed: files without a
    /// name, gone when the commit ends. On disk, not in memory: a layer
    /// may be gigabytes.
    #[arg(
        long,
        env = "DCS_AGENT_SPOOL_DIR",
        default_value = "/var/lib/dcs-agent/spool"
    )]
    spool_dir: PathBuf,
    /// Also keep the new image in containerd on this node (its layers in
    /// the content store, named by the target), so the node runs it
    /// without a pull; containerd then hashes and stores every layer again,
    /// which costs about as much CPU as building it.
    #[arg(long, env = "DCS_AGENT_LOCAL_IMAGE")]
    local_image: bool,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
    /// Seconds running commits get to finish on SIGTERM.
    #[arg(long, default_value_t = 60)]
    shutdown_grace_seconds: u64,
    /// In a cluster: a projected service-account token to present to the API.
    #[arg(long, env = "DCS_AGENT_SA_TOKEN_FILE")]
    service_account_token_file: Option<PathBuf>,
    /// In a cluster: accept the API's service-account tokens (TokenReview).
    #[arg(long, env = "DCS_KUBERNETES")]
    kubernetes: bool,
    /// A plain, unauthenticated Kubernetes API server instead of the
    /// in-cluster one; for tests.
    #[arg(long, env = "DCS_KUBERNETES_API_URL", hide = true)]
    kubernetes_api_url: Option<String>,
    /// Audience of the tokens the API presents to agents.
    #[arg(long, env = "DCS_API_TOKEN_AUDIENCE", default_value = "dcs-agent")]
    api_token_audience: String,
    /// The API's service account, `<namespace>:<name>`.
    #[arg(
        long,
        env = "DCS_API_SERVICE_ACCOUNT",
        default_value = "dcs-system:dcs-api"
    )]
    api_service_account: String,
}

#[derive(Debug, Args)]
struct ContainerdArgs {
    /// containerd's gRPC socket.
    #[arg(
        long,
        env = "DCS_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd_socket: PathBuf,
    /// containerd namespace (`k8s.io` is where kubelet's containers live).
    #[arg(long, env = "DCS_CONTAINERD_NAMESPACE", default_value = "k8s.io")]
    namespace: String,
}

#[derive(Debug, Args)]
struct CommitArgs {
    #[command(flatten)]
    containerd: ContainerdArgs,
    /// The container to commit.
    #[arg(long)]
    container: String,
    /// The tag to push, e.g. `registry.example/team/desktop:v2`.
    #[arg(long)]
    target: String,
    /// A `dockerconfigjson` file (Kubernetes Secret format) with credentials.
    #[arg(long)]
    registry_config: Option<PathBuf>,
    /// A registry (`host:port`) reached over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Layer compression.
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// Do not pause the container while its changes are read.
    #[arg(long)]
    no_pause: bool,
    /// Leave out paths matching this glob. Repeatable.
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Do not exclude the default runtime paths (/tmp/*, /run/*, X11 and VNC files).
    #[arg(long)]
    no_default_excludes: bool,
    /// A config change, Dockerfile style: 'CMD ["app"]', 'ENV K=V', WORKDIR,
    /// USER, LABEL, EXPOSE, ENTRYPOINT. Repeatable.
    #[arg(long = "change")]
    changes: Vec<ConfigChange>,
    /// Recorded in the image history.
    #[arg(long)]
    message: Option<String>,
    /// Recorded as the `io.dcs.snapshot.id` manifest annotation.
    #[arg(long)]
    snapshot_id: Option<String>,
    /// Where per-container lock files are kept.
    #[arg(long, env = "DCS_AGENT_STATE_DIR", default_value = "/run/dcs-agent")]
    state_dir: PathBuf,
    /// Where new layers are kept until they are pushed: files without a
    /// name, gone when the commit ends. On disk, not in memory: a layer
    /// may be gigabytes.
    #[arg(
        long,
        env = "DCS_AGENT_SPOOL_DIR",
        default_value = "/var/lib/dcs-agent/spool"
    )]
    spool_dir: PathBuf,
    /// Also keep the new image in containerd on this node (its layers in
    /// the content store, named by the target), so the node runs it
    /// without a pull; containerd then hashes and stores every layer again,
    /// which costs about as much CPU as building it.
    #[arg(long, env = "DCS_AGENT_LOCAL_IMAGE")]
    local_image: bool,
    /// Accept one secret finding and push it anyway: `RULE:PATH`, as the
    /// refusal lists them (`aws-credentials-file:/root/.aws/credentials`).
    /// Repeatable.
    #[arg(long = "acknowledge", value_name = "RULE:PATH", value_parser = parse_acknowledgement)]
    acknowledged: Vec<Acknowledgement>,
    /// Flatten onto this image: the new image is its layers plus one
    /// layer with everything above them. `NAME@DIGEST`, or the name of an
    /// image in containerd. It must be what the container's image is
    /// built on.
    #[arg(long, value_name = "IMAGE")]
    flatten_base: Option<String>,
    /// Make exactly one new layer, never a second one for what changed
    /// while the bulk was read.
    #[arg(long)]
    single_layer: bool,
}

#[derive(Debug, Args)]
struct PreviewArgs {
    #[command(flatten)]
    containerd: ContainerdArgs,
    /// The container to preview.
    #[arg(long)]
    container: String,
    /// Leave out paths matching this glob, as a commit would. Repeatable.
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// Do not exclude the default runtime paths (/tmp/*, /run/*, X11 and VNC files).
    #[arg(long)]
    no_default_excludes: bool,
}

/// `NAME@DIGEST` as given, or a containerd image's name with its digest.
async fn flatten_base(client: &Containerd, image: &str) -> anyhow::Result<WantedBase> {
    if let Some((name, digest)) = image.rsplit_once('@') {
        return Ok(WantedBase {
            image: name.to_string(),
            digest: digest.to_string(),
        });
    }
    let digest = client
        .image(image)
        .await?
        .and_then(|record| record.target)
        .map(|target| target.digest)
        .with_context(|| format!("the flatten base {image} is not an image in containerd"))?;
    Ok(WantedBase {
        image: image.to_string(),
        digest,
    })
}

/// `RULE:PATH` (rule ids have no `:`; paths may).
fn parse_acknowledgement(text: &str) -> Result<Acknowledgement, String> {
    match text.split_once(':') {
        Some((rule, path)) if !rule.is_empty() && path.starts_with('/') => Ok(Acknowledgement {
            rule: rule.to_string(),
            path: path.to_string(),
        }),
        _ => Err(format!(
            "\"{text}\" is not RULE:PATH with an absolute container path"
        )),
    }
}

/// Runs the command line; the process's exit code. A failure is printed
/// as one line: `dcs-agent: ` and the error with its causes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One sentence, like every other error of this program (clap's
            // own report spans several lines).
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("dcs-agent: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match start(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Sources that repeat what their error already says are left
            // out (see `dcs_support::describe_chain`).
            eprintln!("dcs-agent: {}", dcs_support::describe_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn start(cli: Cli) -> anyhow::Result<()> {
    // Before any TLS client is built, the trace exporter's included.
    install_crypto_provider();
    // Traces of the service and of a commit; the listing, the probe and
    // the one-shot preview have nothing worth a trace.
    let traces_url = match cli.command {
        Command::Serve(_) | Command::Commit(_) => cli.traces.traces_url()?,
        Command::Containers { .. } | Command::Probe(_) | Command::Preview(_) => None,
    };
    telemetry::init(cli.log_format, "warn", traces_url.as_deref(), SERVICE)?;
    // One-shot commands run on one thread: the layer pipeline has its own
    // threads, and fewer threads mean fewer allocator arenas (a smaller
    // peak RSS). The service takes every core.
    let mut runtime = match cli.command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(run(cli.command));
    telemetry::shutdown();
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Containers { containerd, json } => {
            let client = connect(&containerd).await?;
            let containers = client.list_containers().await?;
            if json {
                println!("{}", to_json(&containers)?);
            } else {
                print_table(&containers);
            }
            Ok(())
        }
        Command::Commit(args) => {
            let target = crate::registry::parse_target(&args.target)?;
            let client = connect(&args.containerd).await?;
            let args = *args;
            let request = CommitRequest {
                container_id: args.container,
                target,
                compression: args.compression,
                pause: !args.no_pause,
                excludes: args.excludes,
                default_excludes: !args.no_default_excludes,
                changes: args.changes,
                message: args.message,
                snapshot_id: args.snapshot_id,
                registry: RegistryOptions {
                    config_file: args.registry_config,
                    insecure: args.insecure_registries,
                },
                state_dir: args.state_dir,
                spool_dir: args.spool_dir,
                local_image: args.local_image,
                acknowledged: args.acknowledged,
                flatten: match &args.flatten_base {
                    Some(image) => Some(flatten_base(&client, image).await?),
                    None => None,
                },
                single_layer: args.single_layer,
            };
            // The same span the service's jobs have (`serve::jobs`), so a
            // commit's logs read alike from the CLI and from the service.
            let span = tracing::info_span!(
                "commit",
                container_id = %request.container_id,
                snapshot_id = request.snapshot_id.as_deref().unwrap_or_default(),
            );
            let result = match commit(&client, &request, None).instrument(span).await {
                Ok(result) => result,
                Err(CommitError::SecretsFound(refusal)) => {
                    // What to acknowledge or exclude, for scripts.
                    println!("{}", to_json(&refusal.report)?);
                    return Err(CommitError::SecretsFound(refusal).into());
                }
                Err(e) => return Err(e.into()),
            };
            println!("{}", to_json(&result)?);
            Ok(())
        }
        Command::Preview(args) => {
            let client = connect(&args.containerd).await?;
            let request = crate::preview::PreviewRequest {
                container_id: args.container,
                excludes: args.excludes,
                default_excludes: !args.no_default_excludes,
            };
            let preview = crate::preview::preview(&client, &request).await?;
            println!("{}", to_json(&preview)?);
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
        Command::Probe(args) => {
            let name = match args.check {
                ProbeCheck::Live => "live",
                ProbeCheck::Ready => "ready",
            };
            probe(*args).await.with_context(|| format!("probe {name}"))
        }
    }
}

fn print_table(containers: &[ContainerInfo]) {
    println!(
        "{:<24} {:<10} {:<12} {:<40} IMAGE",
        "CONTAINER", "STATE", "SNAPSHOTTER", "POD"
    );
    for c in containers {
        let pod = match (&c.pod_namespace, &c.pod_name, &c.container_name) {
            (Some(ns), Some(pod), Some(name)) => format!("{ns}/{pod}/{name}"),
            _ => "-".into(),
        };
        let state = serde_json::to_value(c.runtime_state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "{:<24} {:<10} {:<12} {:<40} {}",
            c.id, state, c.snapshotter, pod, c.image
        );
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    validate_namespace(&args.containerd.namespace)?;
    let shared_secret = read_shared_secret(&args.shared_secret_file)?;
    let advertise_url = args.advertise_url.unwrap_or_else(|| {
        let port = args.listen.port();
        match std::env::var("POD_IP") {
            // An IPv6 address needs brackets in a URL.
            Ok(ip) if ip.contains(':') => format!("http://[{ip}]:{port}"),
            Ok(ip) if !ip.is_empty() => format!("http://{ip}:{port}"),
            _ if args.listen.ip().is_unspecified() => format!("http://127.0.0.1:{port}"),
            _ => format!("http://{}", args.listen),
        }
    });
    let api_reviewer = if args.kubernetes || args.kubernetes_api_url.is_some() {
        let reviewer = crate::serve::kube_auth::ApiTokenReviewer::connect(
            args.kubernetes_api_url.as_deref(),
            &args.api_token_audience,
            &args.api_service_account,
        )
        .await
        .context("cannot reach the Kubernetes API")?;
        Some(std::sync::Arc::new(reviewer))
    } else {
        None
    };
    let config = crate::serve::ServeConfig {
        containerd_socket: args.containerd.containerd_socket,
        namespace: args.containerd.namespace,
        node_name: args.node_name,
        listen: args.listen,
        advertise_url,
        api_url: args.api_url,
        shared_secret,
        registry: RegistryOptions {
            config_file: args.registry_config,
            insecure: args.insecure_registries,
        },
        max_concurrent_jobs: args.max_concurrent_jobs,
        state_dir: args.state_dir,
        spool_dir: args.spool_dir,
        local_image: args.local_image,
        heartbeat_interval: std::time::Duration::from_secs(args.heartbeat_seconds.max(1)),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_seconds),
        service_account_token_file: args.service_account_token_file,
        api_reviewer,
    };
    crate::serve::run(config).await
}

/// Asks the local agent's health endpoint, signed like the API's requests.
async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let secret = read_shared_secret(&args.shared_secret_file)?;
    let host = match args.listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let path = match args.check {
        ProbeCheck::Live => dcs_protocol::agent_paths::HEALTHZ,
        ProbeCheck::Ready => dcs_protocol::agent_paths::READYZ,
    };
    let timeout = std::time::Duration::from_secs(args.timeout_seconds.max(1));
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()?;
    let token = secret.sign(
        dcs_protocol::token::API_ISSUER,
        dcs_protocol::token::AGENT_AUDIENCE,
        &args.node_name,
    );
    let url = format!("http://{host}:{}{path}", args.listen.port());
    let response = client.get(url).bearer_auth(token).send().await?;
    if !response.status().is_success() {
        bail!("the agent answered {}", response.status());
    }
    if let ProbeCheck::Live = args.check {
        // containerd replaces its socket when it restarts; a container that
        // kept the old one must be restarted to see the new one.
        let connect = Containerd::connect(
            &args.containerd.containerd_socket,
            &args.containerd.namespace,
        );
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| anyhow!("containerd did not answer in time"))??;
    }
    Ok(())
}

fn read_shared_secret(path: &Path) -> anyhow::Result<dcs_protocol::token::SharedSecret> {
    let secret = std::fs::read(path)
        .with_context(|| format!("cannot read the shared secret {}", path.display()))?;
    Ok(dcs_protocol::token::SharedSecret::new(secret)?)
}

fn validate_namespace(namespace: &str) -> anyhow::Result<()> {
    if namespace.is_empty()
        || !namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        bail!("invalid containerd namespace \"{namespace}\"");
    }
    Ok(())
}

async fn connect(args: &ContainerdArgs) -> anyhow::Result<Containerd> {
    validate_namespace(&args.namespace)?;
    Ok(Containerd::connect(&args.containerd_socket, &args.namespace).await?)
}

fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    serde_json::to_string_pretty(value).context("cannot print the result")
}

/// ring is the one TLS crypto provider of this program (rustls refuses to
/// pick one when two are compiled in); reqwest and oci-client use the
/// process default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_are_rule_and_absolute_path() {
        let ack = parse_acknowledgement("netrc-file:/root/.netrc").unwrap();
        assert_eq!(
            (ack.rule.as_str(), ack.path.as_str()),
            ("netrc-file", "/root/.netrc")
        );
        // Only the first colon splits: paths may hold more.
        let ack = parse_acknowledgement("jwt:/srv/a:b").unwrap();
        assert_eq!(ack.path, "/srv/a:b");
        for bad in [
            "",
            "netrc-file",
            ":/root/.netrc",
            "netrc-file:root/.netrc",
            "netrc-file:",
        ] {
            assert!(parse_acknowledgement(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn commit_takes_repeated_acknowledgements() {
        let cli = Cli::try_parse_from([
            "dcs-agent",
            "commit",
            "--container",
            "c",
            "--target",
            "r.example/a:b",
            "--acknowledge",
            "netrc-file:/root/.netrc",
            "--acknowledge",
            "jwt:/srv/x",
        ])
        .unwrap();
        let Command::Commit(args) = cli.command else {
            panic!("not a commit");
        };
        assert_eq!(args.acknowledged.len(), 2);
        assert!(
            Cli::try_parse_from([
                "dcs-agent",
                "commit",
                "--container",
                "c",
                "--target",
                "r.example/a:b",
                "--acknowledge",
                "no-path",
            ])
            .is_err()
        );
    }
}
