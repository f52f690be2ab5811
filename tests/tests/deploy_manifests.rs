//! The Kubernetes manifests in `deploy/`.
//!
//! `kubectl kustomize deploy/base` renders the base exactly as `kubectl apply
//! -k` would; every document is parsed into the `k8s-openapi` type of its
//! kind (an unknown kind, or a field that type does not have, fails), and the
//! deployment's policy is enforced on the typed objects:
//!
//! - no hostNetwork, hostPID or hostIPC anywhere;
//! - no secret in an environment variable (`secretKeyRef`, `envFrom`
//!   secrets, or a literal value under a secret-looking name): secrets are
//!   files mounted from Secrets;
//! - every container has requests and limits, liveness and readiness probes
//!   (Jobs excepted), drops ALL capabilities and adds back only what its
//!   workload is allowed, no privilege escalation, a read-only root file
//!   system, RuntimeDefault seccomp; everything but the agent runs as
//!   non-root;
//! - hostPath only for the containerd socket and root, mounted read-only,
//!   and only in the agent;
//! - RBAC without wildcards, granting the API exactly pods get/list/watch and
//!   TokenReview create, and the agent exactly TokenReview create when it
//!   checks the API's tokens (nothing otherwise);
//! - in-cluster identity: the agents present a projected service-account
//!   token with audience `dcs-api` and the API one with audience `dcs-agent`
//!   (a dedicated audience per direction, never the API server's), each a
//!   read-only mounted `serviceAccountToken` projection with a short
//!   `expirationSeconds`, and every `*_TOKEN_FILE` setting names such a file;
//!   each side checks the other's tokens for that audience and service
//!   account; the agent gets no automounted token, only a projected one for
//!   the API server (its TokenReviews) and may reach the API server (443,
//!   6443); the shared secret stays mounted in both as the fallback;
//! - a NetworkPolicy lets only API pods reach the agents, on the agent port;
//! - the agent's registry credentials are a file from a
//!   `kubernetes.io/dockerconfigjson` Secret, and `deploy/examples/secrets.yaml`
//!   parses into the Secrets the base mounts.
//!
//! `deploy/overlays/shared-secret` (agents and API authenticate with the
//! shared secret only) is held to the same policy, with the shared-secret
//! identity: no projected tokens and no RBAC for the agents.
//!
//! `the_policy_catches_violations` breaks the rendered manifests in many ways
//! and checks that each break is reported, so the checks cannot rot into
//! passing everything. `manifests_match_the_binaries_and_images` checks that
//! every flag, environment variable and subcommand the manifests use exists in
//! the built binaries, and that the image files install them where the
//! manifests expect.
//!
//! kubectl comes from Debian's `kubernetes-client` package (or `KUBECTL`
//! names one); without it these tests fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, Secret, Service, ServiceAccount, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::Deserialize as _;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::{Value, json};

const NAMESPACE: &str = "dcs-system";
/// The agent's DaemonSet and the API's Deployment, by name.
const AGENT: &str = "dcs-agent";
const API: &str = "dcs-api";
const AGENT_PORT: i32 = 9443;
const API_PORT: i32 = 8080;
const POSTGRES_PORT: i32 = 5432;
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
const CONTAINERD_ROOT: &str = "/var/lib/containerd";
/// Capabilities a workload may add back after dropping ALL, by workload
/// name: the agent reads files of any owner and mode (DAC_READ_SEARCH) and
/// the `trusted.overlay.*` xattrs that mark opaque directories (SYS_ADMIN).
/// Everything else adds nothing.
const ADDED_CAPABILITIES: &[(&str, &[&str])] = &[(AGENT, &["DAC_READ_SEARCH", "SYS_ADMIN"])];
/// What the API's service account may do (apiGroup, resource, verb): read
/// pods for pod-name targeting, review agents' service-account tokens.
const API_PERMISSIONS: &[(&str, &str, &str)] = &[
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("authentication.k8s.io", "tokenreviews", "create"),
];
/// What the agent's service account may do when it checks the API's tokens
/// (in-cluster identity): TokenReviews, nothing else. Without in-cluster
/// identity it may do nothing.
const AGENT_PERMISSIONS: &[(&str, &str, &str)] =
    &[("authentication.k8s.io", "tokenreviews", "create")];
/// Audience of the tokens agents present to the API, and of those the API
/// presents to agents: one per direction, so that a token one side receives
/// is worth nothing against the other (nor against the API server).
const AGENT_TO_API_AUDIENCE: &str = "dcs-api";
const API_TO_AGENT_AUDIENCE: &str = "dcs-agent";
/// The binaries' defaults for the settings above and the service accounts.
const DEFAULT_AGENT_TOKEN_AUDIENCE: &str = "dcs-agent";
const DEFAULT_API_TOKEN_AUDIENCE: &str = "dcs-agent";
const DEFAULT_AGENT_SERVICE_ACCOUNT: &str = "dcs-system:dcs-agent";
const DEFAULT_API_SERVICE_ACCOUNT: &str = "dcs-system:dcs-api";
/// Where in-cluster Kubernetes clients look for the API server's token,
/// `ca.crt` and `namespace`.
const KUBE_API_ACCESS_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Projected service-account tokens live at most this long (the API
/// server's minimum is 600 s; the automounted token lives an hour or more).
const TOKEN_SECONDS: std::ops::RangeInclusive<i64> = 600..=3600;
/// Kubernetes ports of the API server: the `kubernetes` Service's, and the
/// usual one of the server itself (policies see it after the Service's
/// address is translated).
const KUBE_API_PORTS: [i32; 2] = [443, 6443];

/// How the agents and the API authenticate to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// Projected service-account tokens, checked by TokenReview, in both
    /// directions (the base); the shared secret stays as the fallback.
    InCluster,
    /// Tokens signed with the shared secret only
    /// (`deploy/overlays/shared-secret`).
    SharedSecret,
}

// ---------------------------------------------------------------------------
// Rendering and parsing

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// `kubectl kustomize deploy/<dir>`.
fn render(dir: &str) -> String {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let path = workspace_root().join("deploy").join(dir);
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{kubectl} kustomize {}`: {e}. These tests need kubectl: install \
                 Debian's `kubernetes-client` package (apt-get install kubernetes-client) or set \
                 KUBECTL to a kubectl binary",
                path.display()
            )
        });
    assert!(
        output.status.success(),
        "`{kubectl} kustomize {}` failed ({}):\n{}",
        path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kustomize output is UTF-8")
}

/// `kubectl kustomize deploy/base`, once per test process.
fn rendered_base() -> &'static str {
    static RENDERED: OnceLock<String> = OnceLock::new();
    RENDERED.get_or_init(|| render("base"))
}

fn example_secrets_text() -> String {
    let path = workspace_root().join("deploy/examples/secrets.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every non-empty YAML document of `text`, as JSON values.
fn documents(text: &str, source: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{source}: document {} is not valid YAML: {e}", index + 1));
        if !value.is_null() {
            out.push(value);
        }
    }
    out
}

fn base_documents() -> Vec<Value> {
    documents(rendered_base(), "kubectl kustomize deploy/base")
}

fn shared_secret_overlay_documents() -> Vec<Value> {
    documents(
        &render("overlays/shared-secret"),
        "kubectl kustomize deploy/overlays/shared-secret",
    )
}

fn example_documents() -> Vec<Value> {
    documents(&example_secrets_text(), "deploy/examples/secrets.yaml")
}

/// One parsed object of the bundle.
// A handful of objects per test: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    DaemonSet(DaemonSet),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    Job(Job),
    CronJob(CronJob),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
    PodDisruptionBudget(PodDisruptionBudget),
}

/// `Kind namespace/name` of a document, for messages.
fn describe(value: &Value) -> String {
    let kind = value["kind"].as_str().unwrap_or("<no kind>");
    let name = value["metadata"]["name"].as_str().unwrap_or("<no name>");
    match value["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Parses `value` into `T` and back: a field `T` does not know would be
/// dropped silently by the parse, so whatever does not survive the round
/// trip is reported (a typo such as `hostNetwrok` must not pass unseen).
fn strict<T: DeserializeOwned + Serialize>(
    value: &Value,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let typed: T = match serde_json::from_value(value.clone()) {
        Ok(typed) => typed,
        Err(e) => {
            problems.push(format!(
                "{what}: does not parse into its Kubernetes type: {e}"
            ));
            return None;
        }
    };
    let back = serde_json::to_value(&typed).expect("k8s-openapi types serialize");
    let mut lost = Vec::new();
    compare("", value, &back, &mut lost);
    problems.extend(lost.into_iter().map(|l| format!("{what}: {l}")));
    // Checked further all the same, so that one typo does not hide the rest.
    Some(typed)
}

fn compare(path: &str, original: &Value, back: &Value, lost: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    None if value.is_null() => {}
                    None => lost.push(format!(
                        "`{}` is not a field of this kind (misspelt or misplaced?)",
                        here.trim_start_matches('.')
                    )),
                    Some(other) => compare(&here, value, other, lost),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{path}[{i}]"), x, y, lost);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => lost.push(format!(
            "`{}` = {a} reads back as {b}",
            path.trim_start_matches('.')
        )),
    }
}

fn parse_object(value: &Value, problems: &mut Vec<String>) -> Option<Object> {
    let what = describe(value);
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    Some(match (api_version, kind) {
        ("v1", "Namespace") => Object::Namespace(strict(value, &what, problems)?),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(value, &what, problems)?),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(value, &what, problems)?),
        ("v1", "Secret") => Object::Secret(strict(value, &what, problems)?),
        ("v1", "Service") => Object::Service(strict(value, &what, problems)?),
        ("v1", "Pod") => Object::Pod(strict(value, &what, problems)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            Object::ClusterRole(strict(value, &what, problems)?)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(value, &what, problems)?)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(strict(value, &what, problems)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            Object::RoleBinding(strict(value, &what, problems)?)
        }
        ("apps/v1", "DaemonSet") => Object::DaemonSet(strict(value, &what, problems)?),
        ("apps/v1", "Deployment") => Object::Deployment(strict(value, &what, problems)?),
        ("apps/v1", "StatefulSet") => Object::StatefulSet(strict(value, &what, problems)?),
        ("batch/v1", "Job") => Object::Job(strict(value, &what, problems)?),
        ("batch/v1", "CronJob") => Object::CronJob(strict(value, &what, problems)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            Object::NetworkPolicy(strict(value, &what, problems)?)
        }
        ("policy/v1", "PodDisruptionBudget") => {
            Object::PodDisruptionBudget(strict(value, &what, problems)?)
        }
        _ => {
            problems.push(format!(
                "{what}: unknown kind `{kind}` (apiVersion `{api_version}`): this test knows \
                 Namespace, ServiceAccount, ConfigMap, Secret, Service, Pod, ClusterRole, \
                 ClusterRoleBinding, Role, RoleBinding, DaemonSet, Deployment, StatefulSet, Job, \
                 CronJob, NetworkPolicy and PodDisruptionBudget; teach it the new kind and its \
                 policy"
            ));
            return None;
        }
    })
}

// ---------------------------------------------------------------------------
// The bundle: typed objects and the views the checks need

/// A pod template of some workload.
struct Workload {
    /// `DaemonSet dcs-system/dcs-agent`
    what: String,
    kind: &'static str,
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    spec: PodSpec,
}

impl Workload {
    fn is_job(&self) -> bool {
        matches!(self.kind, "Job" | "CronJob")
    }

    fn containers(&self) -> impl Iterator<Item = &Container> {
        self.spec
            .init_containers
            .iter()
            .flatten()
            .chain(&self.spec.containers)
    }
}

#[derive(Default)]
struct Bundle {
    objects: Vec<Object>,
    workloads: Vec<Workload>,
    /// Secrets of deploy/examples/secrets.yaml, by name.
    example_secrets: BTreeMap<String, Secret>,
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

impl Bundle {
    fn workload(&self, kind: &str, name: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.kind == kind && w.name == name)
    }

    fn network_policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.objects.iter().filter_map(|o| match o {
            Object::NetworkPolicy(p) => Some(p),
            _ => None,
        })
    }

    fn service_accounts(&self) -> impl Iterator<Item = &ServiceAccount> {
        self.objects.iter().filter_map(|o| match o {
            Object::ServiceAccount(sa) => Some(sa),
            _ => None,
        })
    }

    /// Rules of the (Cluster)Role a binding refers to, if the bundle has it.
    fn role_rules(&self, kind: &str, name: &str, namespace: &str) -> Option<Vec<PolicyRule>> {
        self.objects.iter().find_map(|o| match o {
            Object::ClusterRole(r)
                if kind == "ClusterRole" && r.metadata.name.as_deref() == Some(name) =>
            {
                Some(r.rules.clone().unwrap_or_default())
            }
            Object::Role(r)
                if kind == "Role"
                    && r.metadata.name.as_deref() == Some(name)
                    && namespace_of(&r.metadata) == namespace =>
            {
                Some(r.rules.clone().unwrap_or_default())
            }
            _ => None,
        })
    }
}

/// Parses the base's documents and the example Secrets; what cannot be
/// parsed is reported.
fn load(base: &[Value], examples: &[Value], problems: &mut Vec<String>) -> Bundle {
    let mut bundle = Bundle::default();
    for value in base {
        if let Some(object) = parse_object(value, problems) {
            bundle.objects.push(object);
        }
    }
    for object in &bundle.objects {
        let (kind, meta, spec): (&'static str, _, Option<&PodSpec>) = match object {
            Object::DaemonSet(o) => (
                "DaemonSet",
                &o.metadata,
                o.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            ),
            Object::Deployment(o) => (
                "Deployment",
                &o.metadata,
                o.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            ),
            Object::StatefulSet(o) => (
                "StatefulSet",
                &o.metadata,
                o.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            ),
            Object::Job(o) => (
                "Job",
                &o.metadata,
                o.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            ),
            Object::CronJob(o) => (
                "CronJob",
                &o.metadata,
                o.spec
                    .as_ref()
                    .and_then(|s| s.job_template.spec.as_ref())
                    .and_then(|s| s.template.spec.as_ref()),
            ),
            Object::Pod(o) => ("Pod", &o.metadata, o.spec.as_ref()),
            _ => continue,
        };
        let name = meta.name.clone().unwrap_or_default();
        let namespace = namespace_of(meta);
        let full = format!("{kind} {namespace}/{name}");
        let Some(spec) = spec else {
            problems.push(format!("{full}: has no pod template spec"));
            continue;
        };
        let labels = match object {
            Object::DaemonSet(o) => o.spec.as_ref().and_then(|s| s.template.metadata.clone()),
            Object::Deployment(o) => o.spec.as_ref().and_then(|s| s.template.metadata.clone()),
            Object::StatefulSet(o) => o.spec.as_ref().and_then(|s| s.template.metadata.clone()),
            Object::Job(o) => o.spec.as_ref().and_then(|s| s.template.metadata.clone()),
            Object::CronJob(o) => o
                .spec
                .as_ref()
                .and_then(|s| s.job_template.spec.as_ref())
                .and_then(|s| s.template.metadata.clone()),
            Object::Pod(o) => Some(o.metadata.clone()),
            _ => None,
        }
        .and_then(|m| m.labels)
        .unwrap_or_default();
        bundle.workloads.push(Workload {
            what: full,
            kind,
            name,
            namespace,
            labels,
            spec: spec.clone(),
        });
    }
    for value in examples {
        let what = format!("deploy/examples/secrets.yaml: {}", describe(value));
        if value["kind"] != "Secret" || value["apiVersion"] != "v1" {
            problems.push(format!("{what}: only v1 Secrets belong in this file"));
            continue;
        }
        if let Some(secret) = strict::<Secret>(value, &what, problems) {
            let name = secret.metadata.name.clone().unwrap_or_default();
            bundle.example_secrets.insert(name, secret);
        }
    }
    bundle
}

// ---------------------------------------------------------------------------
// Helpers

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_labels && by_expressions
}

fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
}

/// `--flag=value` or `--flag value` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&prefix) {
            Some(v)
        } else if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// The file's Secret, Secret key and volume for a path inside a mounted
/// secret volume of `container`.
fn secret_file(
    workload: &Workload,
    container: &Container,
    path: &str,
) -> Result<(String, String), String> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| {
            path.strip_prefix(m.mount_path.trim_end_matches('/'))
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m.mount_path.len())
        .ok_or_else(|| format!("{path} is not inside any volume mount"))?;
    let file = path[mount.mount_path.trim_end_matches('/').len() + 1..].to_string();
    let volume = workload
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or_else(|| format!("volume `{}` is mounted but not declared", mount.name))?;
    let secret = volume.secret.as_ref().ok_or_else(|| {
        format!(
            "{path} is in volume `{}`, which is not a Secret volume",
            mount.name
        )
    })?;
    let name = secret.secret_name.clone().unwrap_or_default();
    let key = match &secret.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == file)
            .map(|i| i.key.clone())
            .ok_or_else(|| {
                format!(
                    "{path}: Secret volume `{}` lists no item with path `{file}`",
                    mount.name
                )
            })?,
        None => file,
    };
    Ok((name, key))
}

/// Is the boolean setting `name` of `container` on? Flags read from the
/// environment take `true`/`false`.
fn env_flag(container: &Container, name: &str) -> bool {
    env_value(container, name).is_some_and(|v| v == "true")
}

/// The volume mount of `container` that holds `path`, that volume, and
/// `path` relative to the mount.
fn mounted_file<'a>(
    workload: &'a Workload,
    container: &'a Container,
    path: &str,
) -> Result<(&'a VolumeMount, &'a Volume, String), String> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| {
            path.strip_prefix(m.mount_path.trim_end_matches('/'))
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m.mount_path.len())
        .ok_or_else(|| format!("{path} is not inside any volume mount"))?;
    let file = path[mount.mount_path.trim_end_matches('/').len() + 1..].to_string();
    let volume = workload
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or_else(|| format!("volume `{}` is mounted but not declared", mount.name))?;
    Ok((mount, volume, file))
}

/// A projected service-account token file of a container.
struct TokenFile {
    volume: String,
    audience: Option<String>,
}

/// The projected service-account token `path` is, in `container`.
fn projected_token(
    workload: &Workload,
    container: &Container,
    path: &str,
) -> Result<TokenFile, String> {
    let (_, volume, file) = mounted_file(workload, container, path)?;
    let token = volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .find(|t| t.path == file)
        .ok_or_else(|| {
            format!(
                "{path} is in volume `{}`, which projects no service-account token at `{file}`",
                volume.name
            )
        })?;
    Ok(TokenFile {
        volume: volume.name.clone(),
        audience: token.audience.clone().filter(|a| !a.is_empty()),
    })
}

/// What in-cluster Kubernetes clients read at KUBE_API_ACCESS_DIR, from a
/// projected volume mounted in `container`: a token for the API server (no
/// audience), `ca.crt` from the `kube-root-ca.crt` ConfigMap, the pod's
/// namespace. What is missing, if anything.
fn kube_api_access(workload: &Workload, container: &Container) -> Result<(), String> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == KUBE_API_ACCESS_DIR)
        .ok_or_else(|| format!("nothing is mounted at {KUBE_API_ACCESS_DIR}"))?;
    let sources: Vec<_> = workload
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.projected.as_ref())
        .ok_or_else(|| {
            format!(
                "{KUBE_API_ACCESS_DIR} is volume `{}`, which is not a projected volume",
                mount.name
            )
        })?
        .sources
        .iter()
        .flatten()
        .collect();
    let mut missing = Vec::new();
    if !sources.iter().any(|s| {
        s.service_account_token
            .as_ref()
            .is_some_and(|t| t.path == "token" && t.audience.as_deref().unwrap_or("").is_empty())
    }) {
        missing.push("`token` (a serviceAccountToken without audience: the API server's)");
    }
    if !sources.iter().any(|s| {
        s.config_map.as_ref().is_some_and(|c| {
            c.name == "kube-root-ca.crt"
                && c.items.as_ref().is_none_or(|items| {
                    items
                        .iter()
                        .any(|i| i.key == "ca.crt" && i.path == "ca.crt")
                })
        })
    }) {
        missing.push("`ca.crt` (from the ConfigMap kube-root-ca.crt)");
    }
    if !sources.iter().any(|s| {
        s.downward_api.as_ref().is_some_and(|d| {
            d.items.iter().flatten().any(|i| {
                i.path == "namespace"
                    && i.field_ref
                        .as_ref()
                        .is_some_and(|f| f.field_path == "metadata.namespace")
            })
        })
    }) {
        missing.push("`namespace` (downward API metadata.namespace)");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "volume `{}` at {KUBE_API_ACCESS_DIR} lacks {}",
            mount.name,
            missing.join(", ")
        ))
    }
}

fn secret_keys(secret: &Secret) -> BTreeSet<String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .chain(secret.string_data.iter().flatten().map(|(k, _)| k.clone()))
        .collect()
}

fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
        })
}

/// Does a NetworkPolicy port list admit `port` (number, or the container
/// port's name) over TCP?
fn ports_admit(ports: Option<&Vec<NetworkPolicyPort>>, port: i32, port_name: Option<&str>) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let tcp = p.protocol.as_deref().unwrap_or("TCP") == "TCP";
        let matches = match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => {
                *n == port || p.end_port.is_some_and(|end| *n <= port && port <= end)
            }
            Some(IntOrString::String(name)) => Some(name.as_str()) == port_name,
        };
        tcp && matches
    })
}

/// Does a peer list admit pods with `labels` in the policy's own namespace?
/// An empty list admits everything; ipBlocks cannot be judged here and do
/// not count.
fn peers_admit(peers: Option<&Vec<NetworkPolicyPeer>>, labels: &BTreeMap<String, String>) -> bool {
    let Some(peers) = peers.filter(|p| !p.is_empty()) else {
        return true;
    };
    peers.iter().any(|peer| {
        if peer.ip_block.is_some() {
            return false;
        }
        let namespace_ok = peer.namespace_selector.as_ref().is_none_or(|ns| {
            let mut ns_labels = BTreeMap::new();
            ns_labels.insert(
                "kubernetes.io/metadata.name".to_string(),
                NAMESPACE.to_string(),
            );
            selector_matches(ns, &ns_labels)
        });
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|s| selector_matches(s, labels));
        namespace_ok && pod_ok
    })
}

fn policy_types(policy: &NetworkPolicy) -> Vec<String> {
    let spec = policy.spec.clone().unwrap_or_default();
    spec.policy_types.unwrap_or_else(|| {
        // The API server's default: Ingress always, Egress when rules exist.
        let mut types = vec!["Ingress".to_string()];
        if spec.egress.is_some() {
            types.push("Egress".to_string());
        }
        types
    })
}

fn policies_selecting<'a>(
    bundle: &'a Bundle,
    workload: &'a Workload,
    direction: &'a str,
) -> impl Iterator<Item = &'a NetworkPolicy> {
    bundle.network_policies().filter(move |p| {
        namespace_of(&p.metadata) == workload.namespace
            && policy_types(p).iter().any(|t| t == direction)
            && p.spec
                .as_ref()
                .and_then(|s| s.pod_selector.as_ref())
                .is_none_or(|s| selector_matches(s, &workload.labels))
    })
}

/// May `from` open a TCP connection to `to` on `port` (container port name
/// `port_name`), as far as the NetworkPolicies of the bundle say?
fn connection_allowed(
    bundle: &Bundle,
    from: &Workload,
    to: &Workload,
    port: i32,
    port_name: Option<&str>,
) -> bool {
    let mut egress = policies_selecting(bundle, from, "Egress").peekable();
    let egress_ok = egress.peek().is_none()
        || egress.any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.egress.iter().flatten())
                .any(|rule| {
                    peers_admit(rule.to.as_ref(), &to.labels)
                        && ports_admit(rule.ports.as_ref(), port, port_name)
                })
        });
    let mut ingress = policies_selecting(bundle, to, "Ingress").peekable();
    let ingress_ok = ingress.peek().is_none()
        || ingress.any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.ingress.iter().flatten())
                .any(|rule| {
                    peers_admit(rule.from.as_ref(), &from.labels)
                        && ports_admit(rule.ports.as_ref(), port, port_name)
                })
        });
    egress_ok && ingress_ok
}

/// May `from` reach an outside address (anything not a pod) on `port`?
fn egress_anywhere_allowed(bundle: &Bundle, from: &Workload, port: i32, protocol: &str) -> bool {
    let mut egress = policies_selecting(bundle, from, "Egress").peekable();
    egress.peek().is_none()
        || egress.any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.egress.iter().flatten())
                .any(|rule| {
                    let to_ok = rule.to.as_ref().is_none_or(|peers| {
                        peers.is_empty()
                            || peers.iter().any(|peer| {
                                peer.ip_block
                                    .as_ref()
                                    .is_some_and(|b| b.cidr == "0.0.0.0/0" || b.cidr == "::/0")
                            })
                    });
                    let port_ok = rule.ports.as_ref().is_none_or(|ports| {
                        ports.is_empty()
                            || ports.iter().any(|p| {
                                p.protocol.as_deref().unwrap_or("TCP") == protocol
                                    && match &p.port {
                                        None => true,
                                        Some(IntOrString::Int(n)) => *n == port,
                                        Some(IntOrString::String(_)) => false,
                                    }
                            })
                    });
                    to_ok && port_ok
                })
        })
}

fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

// ---------------------------------------------------------------------------
// The policy

/// The base's policy: in-cluster identity.
fn check(base: &[Value], examples: &[Value]) -> Vec<String> {
    check_as(base, examples, Identity::InCluster)
}

fn check_as(base: &[Value], examples: &[Value], identity: Identity) -> Vec<String> {
    let mut problems = Vec::new();
    let bundle = load(base, examples, &mut problems);
    check_inventory(&bundle, &mut problems);
    for workload in &bundle.workloads {
        check_workload(&bundle, workload, &mut problems);
    }
    check_agent(&bundle, &mut problems);
    check_api(&bundle, &mut problems);
    check_identity(&bundle, identity, &mut problems);
    check_rbac(&bundle, &mut problems);
    check_network(&bundle, &mut problems);
    check_metrics(&bundle, &mut problems);
    check_secrets(&bundle, &mut problems);
    problems
}

fn check_inventory(bundle: &Bundle, problems: &mut Vec<String>) {
    let has = |f: &dyn Fn(&Object) -> bool| bundle.objects.iter().any(f);
    let named = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, name: &str| {
        meta.name.as_deref() == Some(name)
    };
    if !has(&|o| matches!(o, Object::Namespace(n) if named(&n.metadata, NAMESPACE))) {
        problems.push(format!("the base has no Namespace {NAMESPACE}"));
    }
    if bundle.workload("DaemonSet", AGENT).is_none() {
        problems.push(format!("the base has no DaemonSet {AGENT}"));
    }
    if bundle.workload("Deployment", API).is_none() {
        problems.push(format!("the base has no Deployment {API}"));
    }
    if !bundle.workloads.iter().any(|w| {
        w.kind == "Job"
            && w.spec.containers.iter().any(|c| {
                c.args
                    .as_ref()
                    .is_some_and(|a| a.first().map(String::as_str) == Some("migrate"))
            })
    }) {
        problems.push("the base has no Job running `dcs-api migrate`".to_string());
    }
    if !has(&|o| matches!(o, Object::Service(s) if named(&s.metadata, API))) {
        problems.push(format!("the base has no Service {API}"));
    }
    for object in &bundle.objects {
        let (what, meta) = match object {
            Object::Namespace(_) | Object::ClusterRole(_) | Object::ClusterRoleBinding(_) => {
                continue;
            }
            Object::Secret(s) => {
                problems.push(format!(
                    "Secret {}: Secrets do not belong in the base (their values would be in \
                     git): keep examples in deploy/examples/secrets.yaml",
                    s.metadata.name.clone().unwrap_or_default()
                ));
                continue;
            }
            Object::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Object::Role(o) => ("Role", &o.metadata),
            Object::RoleBinding(o) => ("RoleBinding", &o.metadata),
            Object::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::DaemonSet(o) => ("DaemonSet", &o.metadata),
            Object::Deployment(o) => ("Deployment", &o.metadata),
            Object::StatefulSet(o) => ("StatefulSet", &o.metadata),
            Object::Job(o) => ("Job", &o.metadata),
            Object::CronJob(o) => ("CronJob", &o.metadata),
            Object::Pod(o) => ("Pod", &o.metadata),
            Object::NetworkPolicy(o) => ("NetworkPolicy", &o.metadata),
            Object::PodDisruptionBudget(o) => ("PodDisruptionBudget", &o.metadata),
        };
        if namespace_of(meta) != NAMESPACE {
            problems.push(format!(
                "{what} {}: is in namespace `{}`, not {NAMESPACE}",
                meta.name.clone().unwrap_or_default(),
                namespace_of(meta)
            ));
        }
    }
}

fn check_workload(bundle: &Bundle, w: &Workload, problems: &mut Vec<String>) {
    let spec = &w.spec;
    let what = &w.what;
    for (field, value) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if value == Some(true) {
            problems.push(format!(
                "{what}: {field} is true; no pod may share the host's namespaces"
            ));
        }
    }
    if spec.ephemeral_containers.is_some() {
        problems.push(format!(
            "{what}: ephemeral containers do not belong in manifests"
        ));
    }
    match spec.service_account_name.as_deref() {
        None | Some("default") => problems.push(format!(
            "{what}: runs as the namespace's default service account; give it its own"
        )),
        Some(sa)
            if !bundle
                .service_accounts()
                .any(|s| s.metadata.name.as_deref() == Some(sa)) =>
        {
            problems.push(format!("{what}: service account `{sa}` is not in the base"));
        }
        Some(_) => {}
    }

    // hostPath: only the containerd socket and root, only in the agent.
    let mut host_path_volumes = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let Some(host_path) = &volume.host_path else {
            continue;
        };
        host_path_volumes.insert(volume.name.clone(), host_path.path.clone());
        let expected_type = match host_path.path.as_str() {
            CONTAINERD_SOCKET => "Socket",
            CONTAINERD_ROOT => "Directory",
            other => {
                problems.push(format!(
                    "{what}: hostPath volume `{}` mounts {other}; only {CONTAINERD_SOCKET} and \
                     {CONTAINERD_ROOT} are allowed",
                    volume.name
                ));
                continue;
            }
        };
        if !(w.kind == "DaemonSet" && w.name == AGENT) {
            problems.push(format!(
                "{what}: hostPath volume `{}` ({}); only the agent may mount host paths",
                volume.name, host_path.path
            ));
        }
        if host_path.type_.as_deref() != Some(expected_type) {
            problems.push(format!(
                "{what}: hostPath volume `{}` ({}) must have type {expected_type}, has {:?}",
                volume.name, host_path.path, host_path.type_
            ));
        }
    }

    let allowed_caps: &[&str] = ADDED_CAPABILITIES
        .iter()
        .find(|(name, _)| w.kind == "DaemonSet" && *name == w.name)
        .map(|(_, caps)| *caps)
        .unwrap_or(&[]);
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let regular: BTreeSet<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();

    for container in w.containers() {
        let what = format!("{what}, container {}", container.name);
        let is_init = !regular.contains(container.name.as_str());

        // Image: a release, never a moving tag.
        match container.image.as_deref() {
            None => problems.push(format!("{what}: has no image")),
            Some(image) => {
                let name_part = image.rsplit('/').next().unwrap_or(image);
                if !image.contains('@')
                    && (!name_part.contains(':') || name_part.ends_with(":latest"))
                {
                    problems.push(format!(
                        "{what}: image `{image}` must name a release tag or a digest, not latest"
                    ));
                }
            }
        }

        // No secrets in the environment.
        for env in container.env.iter().flatten() {
            if let Some(source) = &env.value_from
                && let Some(secret) = &source.secret_key_ref
            {
                problems.push(format!(
                    "{what}: env {} takes Secret {}/{} through secretKeyRef; mount the Secret \
                     as a file and pass its path instead",
                    env.name, secret.name, secret.key
                ));
            }
            let upper = env.name.to_ascii_uppercase();
            let secret_like = [
                "PASSWORD",
                "SECRET",
                "TOKEN",
                "CREDENTIAL",
                "DATABASE_URL",
                "PRIVATE_KEY",
            ]
            .iter()
            .any(|word| upper.contains(word));
            // An audience names who a token is for; it is no secret.
            if secret_like
                && !upper.ends_with("_FILE")
                && !upper.ends_with("_AUDIENCE")
                && env.value.as_deref().is_some_and(|v| !v.is_empty())
            {
                problems.push(format!(
                    "{what}: env {} looks like a secret passed by value; mount it from a Secret \
                     as a file",
                    env.name
                ));
            }
        }
        for source in container.env_from.iter().flatten() {
            if let Some(secret) = &source.secret_ref {
                problems.push(format!(
                    "{what}: envFrom takes every key of Secret {} into the environment; mount \
                     it as files instead",
                    secret.name
                ));
            }
        }

        // Resources.
        let resources = container.resources.clone().unwrap_or_default();
        for (kind, map) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for resource in ["cpu", "memory"] {
                if !map.as_ref().is_some_and(|m| m.contains_key(resource)) {
                    problems.push(format!("{what}: resources.{kind}.{resource} is not set"));
                }
            }
        }

        // Probes, except for Jobs and init containers.
        if !w.is_job() && !is_init {
            for (name, probe) in [
                ("livenessProbe", &container.liveness_probe),
                ("readinessProbe", &container.readiness_probe),
            ] {
                match probe {
                    None => problems.push(format!("{what}: has no {name}")),
                    Some(probe) => {
                        if w.kind == "DaemonSet"
                            && w.name == AGENT
                            && (probe.http_get.is_some()
                                || probe.tcp_socket.is_some()
                                || probe.grpc.is_some())
                        {
                            problems.push(format!(
                                "{what}: {name} must be an exec probe: every agent endpoint \
                                 answers 401 without a token, and an open port proves little"
                            ));
                        }
                        if probe.exec.is_none()
                            && probe.http_get.is_none()
                            && probe.tcp_socket.is_none()
                            && probe.grpc.is_none()
                        {
                            problems.push(format!("{what}: {name} has no handler"));
                        }
                    }
                }
            }
        }

        // Host paths are mounted read-only, the containerd root at its own
        // path (containerd reports host paths and the agent opens them).
        for mount in container.volume_mounts.iter().flatten() {
            let Some(host_path) = host_path_volumes.get(&mount.name) else {
                continue;
            };
            if mount.read_only != Some(true) {
                problems.push(format!(
                    "{what}: hostPath {host_path} is mounted at {} without readOnly: true; it \
                     must be read-only",
                    mount.mount_path
                ));
            }
            if mount.mount_path != *host_path {
                problems.push(format!(
                    "{what}: hostPath {host_path} is mounted at {}; mount it at the same path",
                    mount.mount_path
                ));
            }
            if mount.sub_path.is_some() || mount.sub_path_expr.is_some() {
                problems.push(format!(
                    "{what}: hostPath {host_path} is mounted with a subPath"
                ));
            }
            if mount
                .mount_propagation
                .as_deref()
                .is_some_and(|p| p != "None")
            {
                problems.push(format!(
                    "{what}: hostPath {host_path} has mountPropagation {:?}; use None",
                    mount.mount_propagation
                ));
            }
        }

        // Security context.
        let Some(sc) = &container.security_context else {
            problems.push(format!("{what}: has no securityContext"));
            continue;
        };
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|c| c == "ALL") {
            problems.push(format!(
                "{what}: securityContext.capabilities.drop must contain ALL"
            ));
        }
        for cap in caps.add.iter().flatten() {
            if cap.starts_with("CAP_") {
                problems.push(format!(
                    "{what}: capability `{cap}`: spell it without CAP_ (`{}`), as Kubernetes \
                     does; the API server refuses CAP_SYS_ADMIN with allowPrivilegeEscalation: \
                     false",
                    cap.trim_start_matches("CAP_")
                ));
            } else if !allowed_caps.contains(&cap.as_str()) {
                problems.push(format!(
                    "{what}: adds capability {cap}; allowed here: {}",
                    if allowed_caps.is_empty() {
                        "none".to_string()
                    } else {
                        allowed_caps.join(", ")
                    }
                ));
            }
        }
        if sc.privileged == Some(true) {
            problems.push(format!("{what}: is privileged"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            problems.push(format!("{what}: allowPrivilegeEscalation must be false"));
        }
        if sc.read_only_root_filesystem != Some(true) {
            problems.push(format!("{what}: readOnlyRootFilesystem must be true"));
        }
        if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
            problems.push(format!("{what}: procMount must be Default"));
        }
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .or(pod_sc.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str());
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            problems.push(format!(
                "{what}: seccomp profile must be RuntimeDefault, is {}",
                seccomp.unwrap_or("unset (Unconfined)")
            ));
        }
        let is_agent = w.kind == "DaemonSet" && w.name == AGENT;
        if !is_agent {
            let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
            let uid = sc.run_as_user.or(pod_sc.run_as_user);
            if !non_root || uid == Some(0) {
                problems.push(format!(
                    "{what}: must run as non-root (runAsNonRoot: true and a non-zero runAsUser); \
                     only the agent runs as root"
                ));
            }
        }
    }
}

fn check_agent(bundle: &Bundle, problems: &mut Vec<String>) {
    let Some(agent) = bundle.workload("DaemonSet", AGENT) else {
        return;
    };
    let what = &agent.what;
    let daemon_set = bundle.objects.iter().find_map(|o| match o {
        Object::DaemonSet(d) if d.metadata.name.as_deref() == Some(AGENT) => Some(d),
        _ => None,
    });
    let strategy = daemon_set
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.update_strategy.clone())
        .unwrap_or_default();
    let rolling = strategy.rolling_update.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("RollingUpdate")
        || rolling.max_unavailable != Some(IntOrString::Int(1))
    {
        problems.push(format!(
            "{what}: updateStrategy must be RollingUpdate with maxUnavailable: 1, is {:?} {:?}",
            strategy.type_, rolling.max_unavailable
        ));
    }
    if rolling
        .max_surge
        .as_ref()
        .is_some_and(|s| *s != IntOrString::Int(0) && *s != IntOrString::String("0%".into()))
    {
        problems.push(format!(
            "{what}: maxSurge must be 0: two agents on one node would not share commit locks"
        ));
    }
    if agent.spec.automount_service_account_token != Some(false) {
        problems.push(format!(
            "{what}: automountServiceAccountToken must be false: the agent's tokens are its \
             projected volumes (short-lived, and for the API with a dedicated audience)"
        ));
    }
    if agent.spec.host_users == Some(false) {
        problems.push(format!(
            "{what}: hostUsers: false would make the agent's capabilities useless against host \
             files"
        ));
    }
    let Some(container) = agent.spec.containers.first() else {
        problems.push(format!("{what}: has no container"));
        return;
    };
    let args = container.args.clone().unwrap_or_default();
    if args.first().map(String::as_str) != Some("serve") {
        problems.push(format!(
            "{what}: the agent must run `dcs-agent serve`, args are {args:?}"
        ));
    }
    let grace: i64 = flag_value(&args, "--shutdown-grace-seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let termination = agent.spec.termination_grace_period_seconds.unwrap_or(30);
    if termination <= grace {
        problems.push(format!(
            "{what}: terminationGracePeriodSeconds ({termination}) must exceed \
             --shutdown-grace-seconds ({grace}) so that a running commit can finish and be \
             reported before SIGKILL"
        ));
    }
    for (name, field_path) in [("NODE_NAME", "spec.nodeName"), ("POD_IP", "status.podIP")] {
        let from_downward_api = container.env.iter().flatten().any(|e| {
            e.name == name
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .is_some_and(|f| f.field_path == field_path)
        });
        if !from_downward_api {
            problems.push(format!(
                "{what}: env {name} must come from the downward API ({field_path})"
            ));
        }
    }
    if !container
        .ports
        .iter()
        .flatten()
        .any(|p| p.container_port == AGENT_PORT && p.host_port.is_none())
    {
        problems.push(format!(
            "{what}: must expose container port {AGENT_PORT}, without a hostPort"
        ));
    }
    let state_dir = env_value(container, "DCS_AGENT_STATE_DIR").unwrap_or("/run/dcs-agent");
    let state_is_empty_dir = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == state_dir)
        .and_then(|m| {
            agent
                .spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
        })
        .is_some_and(|v| v.empty_dir.is_some());
    if !state_is_empty_dir {
        problems.push(format!(
            "{what}: the state directory {state_dir} must be an emptyDir (the root file system \
             is read-only)"
        ));
    }
    // Registry credentials: a dockerconfigjson Secret, mounted as a file.
    match env_value(container, "DCS_REGISTRY_CONFIG") {
        None => problems.push(format!(
            "{what}: DCS_REGISTRY_CONFIG must name the registry credentials file"
        )),
        Some(path) => match secret_file(agent, container, path) {
            Err(e) => problems.push(format!("{what}: registry credentials: {e}")),
            Ok((secret_name, key)) => match bundle.example_secrets.get(&secret_name) {
                None => problems.push(format!(
                    "{what}: registry credentials come from Secret {secret_name}, which \
                     deploy/examples/secrets.yaml does not show"
                )),
                Some(secret) => {
                    if secret.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
                        problems.push(format!(
                            "{what}: registry credentials Secret {secret_name} must have type \
                             kubernetes.io/dockerconfigjson, has {:?}",
                            secret.type_
                        ));
                    }
                    if key != ".dockerconfigjson" {
                        problems.push(format!(
                            "{what}: {path} must be the `.dockerconfigjson` key of Secret \
                             {secret_name}, is `{key}`"
                        ));
                    }
                }
            },
        },
    }
}

fn check_api(bundle: &Bundle, problems: &mut Vec<String>) {
    let Some(api) = bundle.workload("Deployment", API) else {
        return;
    };
    let replicas = bundle.objects.iter().find_map(|o| match o {
        Object::Deployment(d) if d.metadata.name.as_deref() == Some(API) => {
            Some(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
        }
        _ => None,
    });
    if replicas.unwrap_or(1) < 2 {
        problems.push(format!("{}: needs at least 2 replicas", api.what));
    }
    let service_ok = bundle.objects.iter().any(|o| match o {
        Object::Service(s) => s.spec.as_ref().is_some_and(|spec| {
            spec.selector.as_ref().is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| api.labels.get(k) == Some(v))
            }) && spec.ports.iter().flatten().any(|p| {
                p.port == 80
                    && match &p.target_port {
                        Some(IntOrString::Int(n)) => *n == API_PORT,
                        Some(IntOrString::String(name)) => api.spec.containers.iter().any(|c| {
                            c.ports.iter().flatten().any(|cp| {
                                cp.name.as_deref() == Some(name) && cp.container_port == API_PORT
                            })
                        }),
                        None => false,
                    }
            })
        }),
        _ => false,
    });
    if !service_ok {
        problems.push(format!(
            "{}: no Service selects its pods with port 80 -> {API_PORT}",
            api.what
        ));
    }
    let pdb_ok = bundle.objects.iter().any(|o| match o {
        Object::PodDisruptionBudget(p) => p
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !selector_is_empty(s) && selector_matches(s, &api.labels)),
        _ => false,
    });
    if !pdb_ok {
        problems.push(format!(
            "{}: no PodDisruptionBudget selects its pods",
            api.what
        ));
    }
    for container in &api.spec.containers {
        for (name, probe) in [
            ("readinessProbe", &container.readiness_probe),
            ("livenessProbe", &container.liveness_probe),
        ] {
            let path = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.as_deref());
            let want = if name == "readinessProbe" {
                "/readyz"
            } else {
                "/healthz"
            };
            if path != Some(want) {
                problems.push(format!(
                    "{}, container {}: {name} must be an httpGet on {want}, is {path:?}",
                    api.what, container.name
                ));
            }
        }
    }
}

/// In-cluster identity: which tokens the agents and the API present to each
/// other, for which audience, and where they come from; or, with the
/// shared-secret identity, that there are none.
fn check_identity(bundle: &Bundle, identity: Identity, problems: &mut Vec<String>) {
    let agent = bundle.workload("DaemonSet", AGENT);
    let api = bundle.workload("Deployment", API);
    let is_peer = |w: &Workload| {
        agent.is_some_and(|a| std::ptr::eq(a, w)) || api.is_some_and(|a| std::ptr::eq(a, w))
    };

    // Every projected service-account token: short-lived, mounted
    // read-only, and only in the agent and the API.
    for w in &bundle.workloads {
        for volume in w.spec.volumes.iter().flatten() {
            let tokens = volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|s| s.service_account_token.as_ref());
            for token in tokens {
                let what = format!("{}: volume `{}`", w.what, volume.name);
                if !is_peer(w) {
                    problems.push(format!(
                        "{what} projects a service-account token; only the agent and the API \
                         hold tokens"
                    ));
                }
                match token.expiration_seconds {
                    None => problems.push(format!(
                        "{what}: the projected token has no expirationSeconds (it would live an \
                         hour); set a short one, {}..={} s",
                        TOKEN_SECONDS.start(),
                        TOKEN_SECONDS.end()
                    )),
                    Some(seconds) if !TOKEN_SECONDS.contains(&seconds) => problems.push(format!(
                        "{what}: the projected token's expirationSeconds is {seconds}; it \
                             must be within {}..={} s",
                        TOKEN_SECONDS.start(),
                        TOKEN_SECONDS.end()
                    )),
                    Some(_) => {}
                }
            }
        }
        for container in w.containers() {
            for mount in container.volume_mounts.iter().flatten() {
                let projected = w
                    .spec
                    .volumes
                    .iter()
                    .flatten()
                    .any(|v| v.name == mount.name && v.projected.is_some());
                if projected && mount.read_only != Some(true) {
                    problems.push(format!(
                        "{}, container {}: projected volume `{}` must be mounted read-only \
                         (readOnly: true)",
                        w.what, container.name, mount.name
                    ));
                }
            }
        }
    }

    let (Some(agent), Some(api)) = (agent, api) else {
        return;
    };
    let (Some(agent_c), Some(api_c)) = (agent.spec.containers.first(), api.spec.containers.first())
    else {
        return;
    };
    for (w, c) in [(agent, agent_c), (api, api_c)] {
        if let Some(v) = env_value(c, "DCS_KUBERNETES").filter(|v| *v != "true" && *v != "false") {
            problems.push(format!(
                "{}, container {}: DCS_KUBERNETES is {v:?}; write \"true\" or \"false\"",
                w.what, c.name
            ));
        }
    }
    let agent_reviews = env_flag(agent_c, "DCS_KUBERNETES");
    let api_kubernetes = env_flag(api_c, "DCS_KUBERNETES");
    let agent_token = env_value(agent_c, "DCS_AGENT_SA_TOKEN_FILE");
    let api_token = env_value(api_c, "DCS_API_SA_TOKEN_FILE");

    match identity {
        Identity::InCluster => {
            for (w, name, set, why) in [
                (
                    agent,
                    "DCS_AGENT_SA_TOKEN_FILE",
                    agent_token.is_some(),
                    "the token it presents to the API",
                ),
                (
                    agent,
                    "DCS_KUBERNETES=true",
                    agent_reviews,
                    "to accept the API's tokens, checked by TokenReview",
                ),
                (
                    api,
                    "DCS_API_SA_TOKEN_FILE",
                    api_token.is_some(),
                    "the token it presents to agents",
                ),
                (
                    api,
                    "DCS_KUBERNETES=true",
                    api_kubernetes,
                    "to accept agents' tokens, checked by TokenReview",
                ),
            ] {
                if !set {
                    problems.push(format!(
                        "{}: in-cluster identity needs {name} ({why})",
                        w.what
                    ));
                }
            }
        }
        Identity::SharedSecret => {
            for (w, name, set) in [
                (agent, "DCS_AGENT_SA_TOKEN_FILE", agent_token.is_some()),
                (agent, "DCS_KUBERNETES=true", agent_reviews),
                (api, "DCS_API_SA_TOKEN_FILE", api_token.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "{}: sets {name}, but the shared-secret identity uses no \
                         service-account tokens",
                        w.what
                    ));
                }
            }
        }
    }
    // A token one side presents must be one the other side accepts: a
    // readable token file is always sent, never the shared secret instead.
    if api_token.is_some() && !agent_reviews {
        problems.push(format!(
            "{}: presents its service-account token to agents (DCS_API_SA_TOKEN_FILE), but the \
             agents do not accept it (their DCS_KUBERNETES is not true): every call to an agent \
             would be refused",
            api.what
        ));
    }
    if agent_token.is_some() && !api_kubernetes {
        problems.push(format!(
            "{}: presents a service-account token to the API (DCS_AGENT_SA_TOKEN_FILE), but the \
             API does not check such tokens (its DCS_KUBERNETES is not true)",
            agent.what
        ));
    }

    // Audiences: dcs-api for the agents' tokens, dcs-agent for the API's,
    // and what each side accepts is what the other presents.
    let api_accepts =
        env_value(api_c, "DCS_AGENT_TOKEN_AUDIENCE").unwrap_or(DEFAULT_AGENT_TOKEN_AUDIENCE);
    let agents_accept =
        env_value(agent_c, "DCS_API_TOKEN_AUDIENCE").unwrap_or(DEFAULT_API_TOKEN_AUDIENCE);
    if api_kubernetes && api_accepts != AGENT_TO_API_AUDIENCE {
        problems.push(format!(
            "{}: accepts agents' tokens for audience `{api_accepts}` (DCS_AGENT_TOKEN_AUDIENCE); \
             it must be `{AGENT_TO_API_AUDIENCE}`",
            api.what
        ));
    }
    if agent_reviews && agents_accept != API_TO_AGENT_AUDIENCE {
        problems.push(format!(
            "{}: accepts the API's tokens for audience `{agents_accept}` \
             (DCS_API_TOKEN_AUDIENCE); it must be `{API_TO_AGENT_AUDIENCE}`",
            agent.what
        ));
    }
    let mut audiences = Vec::new();
    for (w, c, env, want, peer, accepted, sa) in [
        (
            agent,
            agent_c,
            "DCS_AGENT_SA_TOKEN_FILE",
            AGENT_TO_API_AUDIENCE,
            "the API accepts",
            api_accepts,
            &agent.spec.service_account_name,
        ),
        (
            api,
            api_c,
            "DCS_API_SA_TOKEN_FILE",
            API_TO_AGENT_AUDIENCE,
            "the agents accept",
            agents_accept,
            &api.spec.service_account_name,
        ),
    ] {
        let Some(path) = env_value(c, env) else {
            continue;
        };
        let what = format!("{}, container {}: env {env} = {path}", w.what, c.name);
        match projected_token(w, c, path) {
            Err(e) => problems.push(format!("{what}: {e}")),
            Ok(token) => match token.audience {
                None => problems.push(format!(
                    "{what}: volume `{}` projects a token without audience, i.e. for the \
                     Kubernetes API server: whoever receives it could call the API server as {}; \
                     give it audience `{want}`",
                    token.volume,
                    sa.as_deref().unwrap_or("its service account")
                )),
                Some(audience) => {
                    if audience != want {
                        problems.push(format!(
                            "{what}: the token's audience is `{audience}`; it must be `{want}` \
                             (one audience per direction)"
                        ));
                    }
                    if audience != accepted {
                        problems.push(format!(
                            "{what}: the token's audience is `{audience}`, but {peer} tokens \
                             for `{accepted}`"
                        ));
                    }
                    audiences.push(audience);
                }
            },
        }
    }
    if audiences.len() == 2 && audiences[0] == audiences[1] {
        problems.push(format!(
            "the agents and the API present tokens for the same audience `{}`: a token one side \
             receives would be good against the other; use one audience per direction",
            audiences[0]
        ));
    }

    // The service accounts each side expects are the other's.
    for (checks, w, c, env, default, other) in [
        (
            api_kubernetes,
            api,
            api_c,
            "DCS_AGENT_SERVICE_ACCOUNT",
            DEFAULT_AGENT_SERVICE_ACCOUNT,
            agent,
        ),
        (
            agent_reviews,
            agent,
            agent_c,
            "DCS_API_SERVICE_ACCOUNT",
            DEFAULT_API_SERVICE_ACCOUNT,
            api,
        ),
    ] {
        let expected = format!(
            "{}:{}",
            other.namespace,
            other
                .spec
                .service_account_name
                .as_deref()
                .unwrap_or("default")
        );
        let named = env_value(c, env).unwrap_or(default);
        if checks && named != expected {
            problems.push(format!(
                "{}: {env} is `{named}`, but {} runs as `{expected}`",
                w.what, other.what
            ));
        }
    }

    // Credentials for the Kubernetes API server. The agent: only the
    // projected ones, and only when it reviews the API's tokens; nothing it
    // does not use.
    if agent_reviews {
        if let Err(e) = kube_api_access(agent, agent_c) {
            problems.push(format!(
                "{}: checks the API's tokens by TokenReview, so it needs credentials for the \
                 Kubernetes API server: {e}",
                agent.what
            ));
        }
    } else if kube_api_access(agent, agent_c).is_ok()
        || agent_c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == KUBE_API_ACCESS_DIR)
    {
        problems.push(format!(
            "{}: mounts credentials for the Kubernetes API server at {KUBE_API_ACCESS_DIR}, \
             which it does not use without DCS_KUBERNETES",
            agent.what
        ));
    }
    for volume in agent.spec.volumes.iter().flatten() {
        let audiences = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|s| s.service_account_token.as_ref())
            .map(|t| t.audience.clone().filter(|a| !a.is_empty()));
        for audience in audiences {
            let unused = match &audience {
                None => !agent_reviews,
                Some(_) => agent_token.is_none(),
            };
            if unused {
                problems.push(format!(
                    "{}: volume `{}` projects a token {} that the agent does not use",
                    agent.what,
                    volume.name,
                    audience.map_or("for the Kubernetes API server".to_string(), |a| {
                        format!("with audience `{a}`")
                    })
                ));
            }
        }
    }
    if api_kubernetes {
        let automount = api
            .spec
            .automount_service_account_token
            .or_else(|| {
                bundle
                    .service_accounts()
                    .find(|sa| sa.metadata.name == api.spec.service_account_name)
                    .and_then(|sa| sa.automount_service_account_token)
            })
            .unwrap_or(true);
        if !automount && let Err(e) = kube_api_access(api, api_c) {
            problems.push(format!(
                "{}: uses the Kubernetes API (DCS_KUBERNETES) without credentials: no \
                 automounted token, and {e}",
                api.what
            ));
        }
    }

    // The shared secret: the fallback either side may still sign with, and
    // the agent's probes' tokens. Both read the same one.
    let mut shared = Vec::new();
    for (w, c) in [(agent, agent_c), (api, api_c)] {
        match env_value(c, "DCS_AGENT_SECRET_FILE") {
            None => problems.push(format!(
                "{}: DCS_AGENT_SECRET_FILE must name the shared secret (the fallback identity, \
                 and the agent's probes)",
                w.what
            )),
            Some(path) => {
                if let Ok(found) = secret_file(w, c, path) {
                    shared.push(found);
                }
            }
        }
    }
    if shared.len() == 2 && shared[0] != shared[1] {
        problems.push(format!(
            "the agents and the API read the shared secret from different Secrets: {:?} and {:?}",
            shared[0], shared[1]
        ));
    }
}

fn check_rbac(bundle: &Bundle, problems: &mut Vec<String>) {
    let triples = |list: &[(&str, &str, &str)]| -> BTreeSet<(String, String, String)> {
        list.iter()
            .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
            .collect()
    };
    let api_allowed = triples(API_PERMISSIONS);
    // The agent needs TokenReviews only when it checks the API's tokens.
    let agent_reviews = bundle
        .workload("DaemonSet", AGENT)
        .and_then(|w| w.spec.containers.first())
        .is_some_and(|c| env_flag(c, "DCS_KUBERNETES"));
    let agent_allowed = if agent_reviews {
        triples(AGENT_PERMISSIONS)
    } else {
        BTreeSet::new()
    };
    let any_allowed: BTreeSet<_> = api_allowed.union(&agent_allowed).cloned().collect();
    let mut check_rules = |what: String, rules: &[PolicyRule], aggregated: bool| {
        if aggregated {
            problems.push(format!(
                "{what}: aggregationRule would pull in other roles' rules"
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            let lists = [
                ("apiGroups", rule.api_groups.clone().unwrap_or_default()),
                ("resources", rule.resources.clone().unwrap_or_default()),
                ("verbs", rule.verbs.clone()),
                (
                    "resourceNames",
                    rule.resource_names.clone().unwrap_or_default(),
                ),
            ];
            for (field, values) in &lists {
                if values.iter().any(|v| v.contains('*')) {
                    problems.push(format!(
                        "{what}: rule {i} has a wildcard in {field}: {values:?}"
                    ));
                }
            }
            if rule
                .non_resource_urls
                .as_ref()
                .is_some_and(|u| !u.is_empty())
            {
                problems.push(format!("{what}: rule {i} grants nonResourceURLs"));
            }
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        let triple = (group.clone(), resource.clone(), verb.clone());
                        if !any_allowed.contains(&triple)
                            && !verb.contains('*')
                            && !resource.contains('*')
                        {
                            problems.push(format!(
                                "{what}: rule {i} grants `{verb}` on `{resource}` (apiGroup \
                                 \"{group}\"); only pods get/list/watch and tokenreviews create \
                                 are allowed"
                            ));
                        }
                    }
                }
            }
        }
    };
    for object in &bundle.objects {
        match object {
            Object::ClusterRole(r) => check_rules(
                format!(
                    "ClusterRole {}",
                    r.metadata.name.clone().unwrap_or_default()
                ),
                r.rules.as_deref().unwrap_or_default(),
                r.aggregation_rule.is_some(),
            ),
            Object::Role(r) => check_rules(
                format!("Role {}", r.metadata.name.clone().unwrap_or_default()),
                r.rules.as_deref().unwrap_or_default(),
                false,
            ),
            _ => {}
        }
    }

    let agent_sa = bundle
        .workload("DaemonSet", AGENT)
        .and_then(|w| w.spec.service_account_name.clone());
    let api_sa = bundle
        .workload("Deployment", API)
        .and_then(|w| w.spec.service_account_name.clone());
    // Who is granted what, cluster-wide: (service account) -> permissions.
    let mut granted: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for object in &bundle.objects {
        let (what, role_ref, subjects, binding_ns) = match object {
            Object::ClusterRoleBinding(b) => (
                format!(
                    "ClusterRoleBinding {}",
                    b.metadata.name.clone().unwrap_or_default()
                ),
                &b.role_ref,
                b.subjects.clone().unwrap_or_default(),
                None,
            ),
            Object::RoleBinding(b) => (
                format!(
                    "RoleBinding {}",
                    b.metadata.name.clone().unwrap_or_default()
                ),
                &b.role_ref,
                b.subjects.clone().unwrap_or_default(),
                Some(namespace_of(&b.metadata)),
            ),
            _ => continue,
        };
        let rules = bundle.role_rules(
            &role_ref.kind,
            &role_ref.name,
            binding_ns.as_deref().unwrap_or_default(),
        );
        let Some(rules) = rules else {
            problems.push(format!(
                "{what}: binds {} {}, which is not in the base (never bind built-in roles such \
                 as cluster-admin or edit)",
                role_ref.kind, role_ref.name
            ));
            continue;
        };
        let mut permissions = BTreeSet::new();
        for rule in &rules {
            for g in rule.api_groups.iter().flatten() {
                for r in rule.resources.iter().flatten() {
                    for v in &rule.verbs {
                        permissions.insert((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
        for subject in &subjects {
            let is_ours = subject.kind == "ServiceAccount"
                && subject.namespace.as_deref() == Some(NAMESPACE)
                && bundle
                    .service_accounts()
                    .any(|sa| sa.metadata.name.as_deref() == Some(subject.name.as_str()));
            if !is_ours {
                problems.push(format!(
                    "{what}: subject {} {} ({:?}) is not a service account of this base",
                    subject.kind, subject.name, subject.namespace
                ));
                continue;
            }
            // What each service account may be given, wherever.
            let (allowed, whose, may) = if Some(&subject.name) == agent_sa.as_ref() {
                (
                    &agent_allowed,
                    "the agent's",
                    if agent_reviews {
                        "the agent may only create tokenreviews"
                    } else {
                        "the agent needs nothing from the Kubernetes API without DCS_KUBERNETES"
                    },
                )
            } else if Some(&subject.name) == api_sa.as_ref() {
                (
                    &api_allowed,
                    "the API's",
                    "the API may only get/list/watch pods and create tokenreviews",
                )
            } else {
                (&BTreeSet::new(), "the", "it needs nothing")
            };
            for (g, r, v) in permissions.difference(allowed) {
                problems.push(format!(
                    "{what}: binds {whose} service account {} to `{v}` on `{r}` (apiGroup \
                     \"{g}\"); {may}",
                    subject.name
                ));
            }
            // Only cluster-wide grants count for what they need.
            if binding_ns.is_none() {
                granted
                    .entry(subject.name.clone())
                    .or_default()
                    .extend(permissions.iter().cloned());
            }
        }
    }
    for (sa, needed, why) in [
        (&api_sa, API_PERMISSIONS, "which the API needs"),
        (
            &agent_sa,
            if agent_reviews {
                AGENT_PERMISSIONS
            } else {
                &[]
            },
            "which the agent needs to check the API's tokens (DCS_KUBERNETES)",
        ),
    ] {
        let Some(sa) = sa else {
            continue;
        };
        let has = granted.get(sa).cloned().unwrap_or_default();
        for (g, r, v) in needed {
            if !has.contains(&(g.to_string(), r.to_string(), v.to_string())) {
                problems.push(format!(
                    "service account {sa}: lacks `{v}` on `{r}` (apiGroup \"{g}\") cluster-wide, \
                     {why}"
                ));
            }
        }
    }
    if let Some(agent_sa) = agent_sa {
        let sa = bundle
            .service_accounts()
            .find(|s| s.metadata.name.as_deref() == Some(agent_sa.as_str()));
        if sa.is_some_and(|s| s.automount_service_account_token != Some(false)) {
            problems.push(format!(
                "ServiceAccount {agent_sa}: automountServiceAccountToken must be false"
            ));
        }
    }
}

fn check_network(bundle: &Bundle, problems: &mut Vec<String>) {
    let (Some(agent), Some(api)) = (
        bundle.workload("DaemonSet", AGENT),
        bundle.workload("Deployment", API),
    ) else {
        return;
    };
    let agent_port_name = agent
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.container_port == AGENT_PORT)
        .and_then(|p| p.name.clone());
    let api_port_name = api
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.container_port == API_PORT)
        .and_then(|p| p.name.clone());

    // Ingress to the agents: isolated, and only from API pods on the agent
    // port. Policies add up, so every rule of every policy selecting the
    // agents must obey.
    let agent_ingress: Vec<&NetworkPolicy> = policies_selecting(bundle, agent, "Ingress").collect();
    if agent_ingress.is_empty() {
        problems.push(format!(
            "no NetworkPolicy selects the agent pods ({:?}) for Ingress: anything in the \
             cluster could connect to them",
            agent.labels
        ));
    }
    for policy in &agent_ingress {
        let what = format!(
            "NetworkPolicy {}",
            policy.metadata.name.clone().unwrap_or_default()
        );
        let rules = policy
            .spec
            .as_ref()
            .and_then(|s| s.ingress.clone())
            .unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let peers = rule.from.clone().unwrap_or_default();
            if peers.is_empty() {
                problems.push(format!(
                    "{what}: ingress rule {i} to the agents has no `from`: it admits every source"
                ));
            }
            for peer in &peers {
                if peer.ip_block.is_some() {
                    problems.push(format!(
                        "{what}: ingress rule {i} to the agents admits an ipBlock; only API pods \
                         may connect"
                    ));
                }
                if peer.namespace_selector.is_some() {
                    problems.push(format!(
                        "{what}: ingress rule {i} to the agents admits pods of other namespaces \
                         (namespaceSelector); only API pods may connect"
                    ));
                }
                match &peer.pod_selector {
                    None => {}
                    Some(selector) => {
                        if !selector_matches(selector, &api.labels) {
                            problems.push(format!(
                                "{what}: ingress rule {i} to the agents admits pods that are not \
                                 the API's ({selector:?})"
                            ));
                        }
                        for other in &bundle.workloads {
                            if other.name != api.name && selector_matches(selector, &other.labels) {
                                problems.push(format!(
                                    "{what}: ingress rule {i} to the agents also admits {}; only \
                                     API pods may connect",
                                    other.what
                                ));
                            }
                        }
                    }
                }
            }
            let ports = rule.ports.clone().unwrap_or_default();
            if ports.is_empty() {
                problems.push(format!(
                    "{what}: ingress rule {i} to the agents admits every port; only {AGENT_PORT}"
                ));
            }
            for port in &ports {
                let ok = port.end_port.is_none()
                    && match &port.port {
                        Some(IntOrString::Int(n)) => *n == AGENT_PORT,
                        Some(IntOrString::String(name)) => Some(name) == agent_port_name.as_ref(),
                        None => false,
                    };
                if !ok {
                    problems.push(format!(
                        "{what}: ingress rule {i} to the agents admits port {:?}; only \
                         {AGENT_PORT}",
                        port.port
                    ));
                }
            }
        }
    }

    // The paths the service needs must stay open.
    if !connection_allowed(bundle, api, agent, AGENT_PORT, agent_port_name.as_deref()) {
        problems.push(format!(
            "the NetworkPolicies do not let API pods reach the agents on port {AGENT_PORT}"
        ));
    }
    if !connection_allowed(bundle, agent, api, API_PORT, api_port_name.as_deref()) {
        problems.push(format!(
            "the NetworkPolicies do not let the agents reach the API on port {API_PORT} \
             (registration, heartbeats, callbacks)"
        ));
    }
    for workload in &bundle.workloads {
        if !egress_anywhere_allowed(bundle, workload, 53, "UDP") {
            problems.push(format!(
                "{}: the NetworkPolicies block DNS (UDP 53)",
                workload.what
            ));
        }
    }
    for workload in bundle
        .workloads
        .iter()
        .filter(|w| w.name == API || w.is_job())
    {
        if !egress_anywhere_allowed(bundle, workload, POSTGRES_PORT, "TCP") {
            problems.push(format!(
                "{}: the NetworkPolicies block PostgreSQL (TCP {POSTGRES_PORT})",
                workload.what
            ));
        }
    }
    if !egress_anywhere_allowed(bundle, api, 443, "TCP") {
        problems.push(format!(
            "{}: the NetworkPolicies block the Kubernetes API server and webhooks (TCP 443)",
            api.what
        ));
    }
    if !egress_anywhere_allowed(bundle, agent, 443, "TCP") {
        problems.push(format!(
            "{}: the NetworkPolicies block registries (TCP 443)",
            agent.what
        ));
    }
    // The Kubernetes API server, for whoever calls it.
    for (w, why) in [
        (agent, "the agent's TokenReviews of the API's tokens"),
        (api, "pod-name targeting and TokenReviews of agents' tokens"),
    ] {
        if !w
            .spec
            .containers
            .first()
            .is_some_and(|c| env_flag(c, "DCS_KUBERNETES"))
        {
            continue;
        }
        for port in KUBE_API_PORTS {
            if !egress_anywhere_allowed(bundle, w, port, "TCP") {
                problems.push(format!(
                    "{}: the NetworkPolicies block the Kubernetes API server (TCP {port}), which \
                     {why} need",
                    w.what
                ));
            }
        }
    }
}

/// The namespace Prometheus runs in: the only one that may scrape the API.
const MONITORING_NAMESPACE: &str = "monitoring";
/// Namespaces that must not reach the API's metrics port.
const NOT_MONITORING: [&str; 4] = [NAMESPACE, "default", "kube-system", "workshop"];

fn namespace_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])
}

/// `/metrics` of the API is served on a port of its own, not on the API's
/// port (which every pod of the cluster reaches), and only the monitoring
/// namespace may connect to that port.
fn check_metrics(bundle: &Bundle, problems: &mut Vec<String>) {
    let Some(api) = bundle.workload("Deployment", API) else {
        return;
    };
    let Some(container) = api.spec.containers.first() else {
        return;
    };
    let args = container.args.clone().unwrap_or_default();
    let listen = env_value(container, "DCS_API_METRICS_LISTEN")
        .or_else(|| flag_value(&args, "--metrics-listen"));
    let port = listen
        .and_then(|l| l.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<i32>().ok());
    let Some(port) = port.filter(|p| *p != API_PORT) else {
        problems.push(format!(
            "{}: /metrics is served on the API's port, which every pod of the cluster may \
             reach; serve it apart (DCS_API_METRICS_LISTEN)",
            api.what
        ));
        return;
    };
    let port_name = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == port)
        .map(|p| p.name.clone());
    let Some(port_name) = port_name else {
        problems.push(format!(
            "{}: the metrics port {port} is not a containerPort of the API container",
            api.what
        ));
        return;
    };
    let mut monitoring_admitted = false;
    for policy in policies_selecting(bundle, api, "Ingress") {
        let what = format!(
            "NetworkPolicy {}",
            policy.metadata.name.clone().unwrap_or_default()
        );
        let rules = policy
            .spec
            .as_ref()
            .and_then(|s| s.ingress.clone())
            .unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            if !ports_admit(rule.ports.as_ref(), port, port_name.as_deref()) {
                continue;
            }
            let peers = rule.from.clone().unwrap_or_default();
            if peers.is_empty() {
                problems.push(format!(
                    "{what}: ingress rule {i} admits every source to the metrics port {port}"
                ));
            }
            for peer in &peers {
                if peer.ip_block.is_some() {
                    problems.push(format!(
                        "{what}: ingress rule {i} admits an ipBlock to the metrics port {port}"
                    ));
                    continue;
                }
                let Some(namespaces) = &peer.namespace_selector else {
                    problems.push(format!(
                        "{what}: ingress rule {i} admits pods of {NAMESPACE} to the metrics port \
                         {port}; only the {MONITORING_NAMESPACE} namespace may scrape it"
                    ));
                    continue;
                };
                for other in NOT_MONITORING {
                    if selector_matches(namespaces, &namespace_labels(other)) {
                        problems.push(format!(
                            "{what}: ingress rule {i} admits namespace {other} to the metrics \
                             port {port}; only the {MONITORING_NAMESPACE} namespace may scrape it"
                        ));
                    }
                }
                if selector_matches(namespaces, &namespace_labels(MONITORING_NAMESPACE)) {
                    monitoring_admitted = true;
                }
            }
        }
    }
    if !monitoring_admitted {
        problems.push(format!(
            "the {MONITORING_NAMESPACE} namespace cannot reach the API's metrics port {port}"
        ));
    }
}

fn check_secrets(bundle: &Bundle, problems: &mut Vec<String>) {
    if bundle.example_secrets.is_empty() {
        problems.push("deploy/examples/secrets.yaml has no Secret".to_string());
    }
    for (name, secret) in &bundle.example_secrets {
        let what = format!("deploy/examples/secrets.yaml: Secret {name}");
        if namespace_of(&secret.metadata) != NAMESPACE {
            problems.push(format!("{what}: must be in namespace {NAMESPACE}"));
        }
        if secret.type_.as_deref() == Some("kubernetes.io/dockerconfigjson") {
            match secret_value(secret, ".dockerconfigjson") {
                None => problems.push(format!("{what}: has no `.dockerconfigjson` key")),
                Some(bytes) => {
                    let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
                    if !parsed.as_ref().is_ok_and(|v| v["auths"].is_object()) {
                        problems.push(format!(
                            "{what}: `.dockerconfigjson` must be JSON with an `auths` object"
                        ));
                    }
                }
            }
        }
    }
    for workload in &bundle.workloads {
        // Every Secret volume refers to a Secret the examples show, with the
        // keys it mounts.
        for volume in workload.spec.volumes.iter().flatten() {
            let Some(source) = &volume.secret else {
                continue;
            };
            let name = source.secret_name.clone().unwrap_or_default();
            match bundle.example_secrets.get(&name) {
                None => problems.push(format!(
                    "{}: volume `{}` mounts Secret {name}, which deploy/examples/secrets.yaml \
                     does not show",
                    workload.what, volume.name
                )),
                Some(secret) => {
                    let keys = secret_keys(secret);
                    for item in source.items.iter().flatten() {
                        if !keys.contains(&item.key) {
                            problems.push(format!(
                                "{}: volume `{}` mounts key `{}` of Secret {name}, which the \
                                 example does not have (it has {keys:?})",
                                workload.what, volume.name, item.key
                            ));
                        }
                    }
                }
            }
        }
        // Every setting that names a secret file names one inside a mounted
        // Secret (`*_TOKEN_FILE`s name projected service-account tokens:
        // check_identity).
        for container in workload.containers() {
            for env in container.env.iter().flatten() {
                let names_a_file = (env.name.ends_with("_FILE")
                    && !env.name.ends_with("_TOKEN_FILE"))
                    || env.name == "DCS_REGISTRY_CONFIG";
                let Some(path) = env.value.as_deref().filter(|_| names_a_file) else {
                    continue;
                };
                if let Err(e) = secret_file(workload, container, path) {
                    problems.push(format!(
                        "{}, container {}: env {} = {path}: {e}",
                        workload.what, container.name, env.name
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests

fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "the manifests in deploy/ break {} rule(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let mut problems = Vec::new();
    let bundle = load(&base_documents(), &example_documents(), &mut problems);
    assert_no_problems(&problems);
    let kinds: BTreeSet<&str> = bundle
        .objects
        .iter()
        .map(|o| match o {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Secret(_) => "Secret",
            Object::Service(_) => "Service",
            Object::DaemonSet(_) => "DaemonSet",
            Object::Deployment(_) => "Deployment",
            Object::StatefulSet(_) => "StatefulSet",
            Object::Job(_) => "Job",
            Object::CronJob(_) => "CronJob",
            Object::Pod(_) => "Pod",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
        })
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Deployment",
        "Service",
        "Job",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(
            kinds.contains(kind),
            "the base renders no {kind}; it has {kinds:?}"
        );
    }
    assert!(
        bundle.example_secrets.len() >= 4,
        "deploy/examples/secrets.yaml should show the database URL, JWT key, agent secret and \
         registry credentials Secrets; it has {:?}",
        bundle.example_secrets.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_manifests_follow_the_deployment_policy() {
    assert_no_problems(&check(&base_documents(), &example_documents()));
}

#[test]
fn the_shared_secret_overlay_follows_the_policy() {
    let overlay = shared_secret_overlay_documents();
    let examples = example_documents();
    assert_no_problems(&check_as(&overlay, &examples, Identity::SharedSecret));
    // And the two policies do tell the modes apart.
    let as_in_cluster = check_as(&overlay, &examples, Identity::InCluster);
    assert!(
        as_in_cluster
            .iter()
            .any(|p| p.contains("in-cluster identity needs DCS_AGENT_SA_TOKEN_FILE")),
        "the overlay passes as in-cluster identity: {as_in_cluster:#?}"
    );
    let base_as_shared = check_as(&base_documents(), &examples, Identity::SharedSecret);
    assert!(
        base_as_shared
            .iter()
            .any(|p| p.contains("the shared-secret identity uses no service-account tokens")),
        "the base passes as shared-secret identity: {base_as_shared:#?}"
    );
}

/// The document of `kind`/`name` in `docs`.
fn doc<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the base renders no {kind} {name}"))
}

/// Sets the field at the JSON pointer `at` (its parent must exist).
fn set(value: &mut Value, at: &str, new: Value) {
    let (parent, key) = at.rsplit_once('/').expect("a JSON pointer");
    let parent = value
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent} does not exist"));
    match parent {
        Value::Object(map) => {
            map.insert(key.to_string(), new);
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("an array index");
            if index == items.len() {
                items.push(new);
            } else {
                items[index] = new;
            }
        }
        other => panic!("{at}: parent is not an object or array: {other}"),
    }
}

fn remove(value: &mut Value, at: &str) {
    let (parent, key) = at.rsplit_once('/').expect("a JSON pointer");
    value
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove(key))
        .unwrap_or_else(|| panic!("{at} does not exist"));
}

/// Removes the element named `name` from the array at `at`.
fn remove_named(value: &mut Value, at: &str, name: &str) {
    let items = value
        .pointer_mut(at)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("{at} is not an array"));
    let before = items.len();
    items.retain(|i| i["name"] != name);
    assert!(items.len() < before, "no element named {name} in {at}");
}

/// Index of the named element of the array at `at`.
fn index_of(value: &Value, at: &str, name: &str) -> usize {
    value
        .pointer(at)
        .and_then(Value::as_array)
        .and_then(|items| items.iter().position(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no element named {name} in {at}"))
}

/// JSON pointers into a rendered workload: its pod spec.
const POD: &str = "/spec/template/spec";
/// The first (only) container of a workload.
const CONTAINER: &str = "/spec/template/spec/containers/0";

type Mutation = (
    &'static str,
    &'static str,
    fn(&mut Vec<Value>, &mut Vec<Value>),
);

#[test]
fn the_policy_catches_violations() {
    let base = base_documents();
    let examples = example_documents();
    assert_no_problems(&check(&base, &examples));

    let mutations: &[Mutation] = &[
        (
            "agent on the host network",
            "hostNetwork is true",
            |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{POD}/hostNetwork"),
                    json!(true),
                );
            },
        ),
        (
            "API in the host PID namespace",
            "hostPID is true",
            |b, _| {
                set(
                    doc(b, "Deployment", API),
                    &format!("{POD}/hostPID"),
                    json!(true),
                );
            },
        ),
        (
            "migration in the host IPC namespace",
            "hostIPC is true",
            |b, _| {
                set(
                    doc(b, "Job", "dcs-api-migrate"),
                    &format!("{POD}/hostIPC"),
                    json!(true),
                );
            },
        ),
        (
            "a misspelt field",
            "`spec.template.spec.hostNetwrok` is not a field",
            |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{POD}/hostNetwrok"),
                    json!(true),
                );
            },
        ),
        ("an unknown kind", "unknown kind `Ingresss`", |b, _| {
            b.push(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingresss",
                          "metadata": {"name": "x", "namespace": NAMESPACE}}),
            );
        }),
        (
            "a Secret in the base",
            "Secrets do not belong in the base",
            |b, e| {
                b.push(e[0].clone());
            },
        ),
        (
            "a secret through secretKeyRef",
            "through secretKeyRef",
            |b, _| {
                let env = format!("{CONTAINER}/env");
                let agent = doc(b, "DaemonSet", AGENT);
                let n = agent
                    .pointer(&env)
                    .and_then(Value::as_array)
                    .map(Vec::len)
                    .unwrap_or(0);
                set(
                    agent,
                    &format!("{env}/{n}"),
                    json!({"name": "DATABASE_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "dcs-database", "key": "url"}}}),
                );
            },
        ),
        (
            "secrets through envFrom",
            "envFrom takes every key of Secret",
            |b, _| {
                set(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/envFrom"),
                    json!([{"secretRef": {"name": "dcs-database"}}]),
                );
            },
        ),
        (
            "DATABASE_URL by value",
            "env DATABASE_URL looks like a secret passed by value",
            |b, _| {
                let env = format!("{CONTAINER}/env");
                let api = doc(b, "Deployment", API);
                set(
                    api,
                    &format!("{env}/0"),
                    json!({"name": "DATABASE_URL", "value": "postgres://u:p@db/dcs"}),
                );
            },
        ),
        (
            "no memory limit",
            "resources.limits.memory is not set",
            |b, _| {
                remove(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/resources/limits/memory"),
                );
            },
        ),
        (
            "no CPU request",
            "resources.requests.cpu is not set",
            |b, _| {
                remove(
                    doc(b, "Job", "dcs-api-migrate"),
                    &format!("{CONTAINER}/resources/requests/cpu"),
                );
            },
        ),
        ("no liveness probe", "has no livenessProbe", |b, _| {
            remove(
                doc(b, "DaemonSet", AGENT),
                &format!("{CONTAINER}/livenessProbe"),
            );
        }),
        ("no readiness probe", "has no readinessProbe", |b, _| {
            remove(
                doc(b, "Deployment", API),
                &format!("{CONTAINER}/readinessProbe"),
            );
        }),
        (
            "an httpGet probe on the agent",
            "must be an exec probe",
            |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{CONTAINER}/readinessProbe"),
                    json!({"httpGet": {"path": "/readyz", "port": AGENT_PORT}}),
                );
            },
        ),
        (
            "an extra capability",
            "adds capability NET_ADMIN",
            |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{CONTAINER}/securityContext/capabilities/add/2"),
                    json!("NET_ADMIN"),
                );
            },
        ),
        (
            "a capability for the API",
            "adds capability DAC_READ_SEARCH; allowed here: none",
            |b, _| {
                set(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/securityContext/capabilities/add"),
                    json!(["DAC_READ_SEARCH"]),
                );
            },
        ),
        (
            "CAP_SYS_ADMIN spelling",
            "capability `CAP_SYS_ADMIN`",
            |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{CONTAINER}/securityContext/capabilities/add/1"),
                    json!("CAP_SYS_ADMIN"),
                );
            },
        ),
        (
            "capabilities not dropped",
            "drop must contain ALL",
            |b, _| {
                set(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/securityContext/capabilities/drop"),
                    json!(["NET_RAW"]),
                );
            },
        ),
        (
            "privilege escalation",
            "allowPrivilegeEscalation must be false",
            |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{CONTAINER}/securityContext/allowPrivilegeEscalation"),
                    json!(true),
                );
            },
        ),
        ("a privileged container", "is privileged", |b, _| {
            set(
                doc(b, "DaemonSet", AGENT),
                &format!("{CONTAINER}/securityContext/privileged"),
                json!(true),
            );
        }),
        (
            "a writable root file system",
            "readOnlyRootFilesystem must be true",
            |b, _| {
                set(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/securityContext/readOnlyRootFilesystem"),
                    json!(false),
                );
            },
        ),
        (
            "no seccomp",
            "seccomp profile must be RuntimeDefault",
            |b, _| {
                let api = doc(b, "Deployment", API);
                remove(api, &format!("{CONTAINER}/securityContext/seccompProfile"));
                remove(api, &format!("{POD}/securityContext/seccompProfile"));
            },
        ),
        ("the API as root", "must run as non-root", |b, _| {
            let api = doc(b, "Deployment", API);
            set(
                api,
                &format!("{CONTAINER}/securityContext/runAsUser"),
                json!(0),
            );
        }),
        (
            "a writable containerd root",
            "hostPath /var/lib/containerd is mounted at /var/lib/containerd without readOnly",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(
                    agent,
                    &format!("{CONTAINER}/volumeMounts"),
                    "containerd-root",
                );
                set(
                    agent,
                    &format!("{CONTAINER}/volumeMounts/{i}/readOnly"),
                    json!(false),
                );
            },
        ),
        (
            "the containerd root elsewhere",
            "mount it at the same path",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(
                    agent,
                    &format!("{CONTAINER}/volumeMounts"),
                    "containerd-root",
                );
                set(
                    agent,
                    &format!("{CONTAINER}/volumeMounts/{i}/mountPath"),
                    json!("/host/containerd"),
                );
            },
        ),
        ("another host path", "mounts /etc; only", |b, _| {
            let agent = doc(b, "DaemonSet", AGENT);
            let i = index_of(agent, &format!("{POD}/volumes"), "containerd-root");
            set(
                agent,
                &format!("{POD}/volumes/{i}/hostPath/path"),
                json!("/etc"),
            );
        }),
        (
            "a host path in the API",
            "only the agent may mount host paths",
            |b, _| {
                let api = doc(b, "Deployment", API);
                let n = api
                    .pointer(&format!("{POD}/volumes"))
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                set(
                    api,
                    &format!("{POD}/volumes/{n}"),
                    json!({"name": "sock",
                "hostPath": {"path": CONTAINERD_SOCKET, "type": "Socket"}}),
                );
            },
        ),
        (
            "the socket as a directory",
            "must have type Socket",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{POD}/volumes"), "containerd-socket");
                set(
                    agent,
                    &format!("{POD}/volumes/{i}/hostPath/type"),
                    json!("DirectoryOrCreate"),
                );
            },
        ),
        (
            "registry credentials from an Opaque Secret",
            "must have type kubernetes.io/dockerconfigjson",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{POD}/volumes"), "registry-credentials");
                set(
                    agent,
                    &format!("{POD}/volumes/{i}/secret"),
                    json!({"secretName": "dcs-database",
                "items": [{"key": "url", "path": "config.json"}]}),
                );
            },
        ),
        (
            "a secret file outside any Secret",
            "is in volume `state`, which is not a Secret volume",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{CONTAINER}/env"), "DCS_AGENT_SECRET_FILE");
                set(
                    agent,
                    &format!("{CONTAINER}/env/{i}/value"),
                    json!("/run/dcs-agent/secret"),
                );
            },
        ),
        (
            "a Secret the examples lack",
            "which deploy/examples/secrets.yaml does not show",
            |_, e| {
                e.retain(|s| s["metadata"]["name"] != "dcs-api-jwt");
            },
        ),
        (
            "NODE_NAME not from the downward API",
            "env NODE_NAME must come from the downward API",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{CONTAINER}/env"), "NODE_NAME");
                set(
                    agent,
                    &format!("{CONTAINER}/env/{i}"),
                    json!({"name": "NODE_NAME", "value": "node-1"}),
                );
            },
        ),
        (
            "a short termination grace",
            "terminationGracePeriodSeconds (60) must exceed",
            |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{POD}/terminationGracePeriodSeconds"),
                    json!(60),
                );
            },
        ),
        ("three agents down at once", "maxUnavailable: 1", |b, _| {
            set(
                doc(b, "DaemonSet", AGENT),
                "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                json!(3),
            );
        }),
        (
            "a token in the agent",
            "automountServiceAccountToken must be false",
            |b, _| {
                set(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{POD}/automountServiceAccountToken"),
                    json!(true),
                );
            },
        ),
        ("an RBAC wildcard", "has a wildcard in verbs", |b, _| {
            set(doc(b, "ClusterRole", API), "/rules/0/verbs", json!(["*"]));
        }),
        ("reading secrets", "grants `get` on `secrets`", |b, _| {
            set(
                doc(b, "ClusterRole", API),
                "/rules/2",
                json!({"apiGroups": [""],
                "resources": ["secrets"], "verbs": ["get"]}),
            );
        }),
        ("pods/exec", "grants `create` on `pods/exec`", |b, _| {
            set(
                doc(b, "ClusterRole", API),
                "/rules/2",
                json!({"apiGroups": [""],
                "resources": ["pods/exec"], "verbs": ["create"]}),
            );
        }),
        (
            "no TokenReview",
            "lacks `create` on `tokenreviews`",
            |b, _| {
                let role = doc(b, "ClusterRole", API);
                role["rules"].as_array_mut().unwrap().truncate(1);
            },
        ),
        (
            "the agent bound to a role",
            "binds the agent's service account",
            |b, _| {
                set(
                    doc(b, "ClusterRoleBinding", API),
                    "/subjects/1",
                    json!({"kind": "ServiceAccount", "name": AGENT, "namespace": NAMESPACE}),
                );
            },
        ),
        ("a built-in role", "which is not in the base", |b, _| {
            set(
                doc(b, "ClusterRoleBinding", API),
                "/roleRef/name",
                json!("cluster-admin"),
            );
        }),
        (
            "agents open to the cluster",
            "admits pods of other namespaces",
            |b, _| {
                set(
                    doc(b, "NetworkPolicy", AGENT),
                    "/spec/ingress/0/from/1",
                    json!({"namespaceSelector": {}}),
                );
            },
        ),
        ("agents open on every port", "admits every port", |b, _| {
            remove(doc(b, "NetworkPolicy", AGENT), "/spec/ingress/0/ports");
        }),
        (
            "agents open to the migration Job",
            "also admits Job dcs-system/dcs-api-migrate",
            |b, _| {
                set(
                    doc(b, "NetworkPolicy", AGENT),
                    "/spec/ingress/0/from/0/podSelector",
                    json!({"matchLabels": {"app.kubernetes.io/part-of": "dcs"}}),
                );
            },
        ),
        (
            "agents without an ingress policy",
            "no NetworkPolicy selects the agent pods",
            |b, _| {
                b.retain(|d| {
                    !(d["kind"] == "NetworkPolicy"
                        && (d["metadata"]["name"] == AGENT
                            || d["metadata"]["name"] == "default-deny"))
                });
            },
        ),
        (
            "the API cut off from the agents",
            "do not let API pods reach the agents",
            |b, _| {
                let policy = doc(b, "NetworkPolicy", API);
                let rules = policy["spec"]["egress"].as_array_mut().unwrap();
                rules.retain(|r| !r.to_string().contains("dcs-agent"));
            },
        ),
        (
            "a registry Secret without auths",
            "must be JSON with an `auths` object",
            |_, e| {
                let secret = e
                    .iter_mut()
                    .find(|s| s["type"] == "kubernetes.io/dockerconfigjson")
                    .unwrap();
                set(secret, "/stringData/.dockerconfigjson", json!("{}"));
            },
        ),
        (
            "an example that is not a Secret",
            "does not parse into its Kubernetes type",
            |_, e| {
                set(&mut e[0], "/stringData", json!("not a map"));
            },
        ),
        // In-cluster identity.
        (
            "the agents' token for the API server",
            "projects a token without audience, i.e. for the Kubernetes API server",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{POD}/volumes"), "token-for-api");
                remove(
                    agent,
                    &format!("{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/audience"),
                );
            },
        ),
        (
            "the agents' token for the wrong audience",
            "the token's audience is `dcs-agent`, but the API accepts tokens for `dcs-api`",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{POD}/volumes"), "token-for-api");
                set(
                    agent,
                    &format!("{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/audience"),
                    json!("dcs-agent"),
                );
            },
        ),
        (
            "one audience both ways",
            "present tokens for the same audience `dcs-api`",
            |b, _| {
                let api = doc(b, "Deployment", API);
                let i = index_of(api, &format!("{POD}/volumes"), "token-for-agents");
                set(
                    api,
                    &format!("{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/audience"),
                    json!("dcs-api"),
                );
            },
        ),
        (
            "the API accepting the default audience",
            "accepts agents' tokens for audience `dcs-agent`",
            |b, _| {
                remove_named(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/env"),
                    "DCS_AGENT_TOKEN_AUDIENCE",
                );
            },
        ),
        (
            "no token volume in the agent",
            "env DCS_AGENT_SA_TOKEN_FILE = /var/run/secrets/dcs/token: /var/run/secrets/dcs/token \
             is not inside any volume mount",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                remove_named(agent, &format!("{POD}/volumes"), "token-for-api");
                remove_named(agent, &format!("{CONTAINER}/volumeMounts"), "token-for-api");
            },
        ),
        (
            "the agents' token file in a Secret",
            "which projects no service-account token at `shared-secret`",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(
                    agent,
                    &format!("{CONTAINER}/env"),
                    "DCS_AGENT_SA_TOKEN_FILE",
                );
                set(
                    agent,
                    &format!("{CONTAINER}/env/{i}/value"),
                    json!("/etc/dcs/agent/shared-secret"),
                );
            },
        ),
        (
            "a day-long token",
            "the projected token's expirationSeconds is 86400",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{POD}/volumes"), "kube-api-access");
                set(
                    agent,
                    &format!(
                        "{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/expirationSeconds"
                    ),
                    json!(86400),
                );
            },
        ),
        (
            "a token without expiry",
            "the projected token has no expirationSeconds",
            |b, _| {
                let api = doc(b, "Deployment", API);
                let i = index_of(api, &format!("{POD}/volumes"), "token-for-agents");
                remove(
                    api,
                    &format!(
                        "{POD}/volumes/{i}/projected/sources/0/serviceAccountToken/expirationSeconds"
                    ),
                );
            },
        ),
        (
            "a writable token mount",
            "projected volume `token-for-agents` must be mounted read-only",
            |b, _| {
                let api = doc(b, "Deployment", API);
                let i = index_of(
                    api,
                    &format!("{CONTAINER}/volumeMounts"),
                    "token-for-agents",
                );
                remove(api, &format!("{CONTAINER}/volumeMounts/{i}/readOnly"));
            },
        ),
        (
            "a token in the migration Job",
            "only the agent and the API hold tokens",
            |b, _| {
                let job = doc(b, "Job", "dcs-api-migrate");
                set(
                    job,
                    &format!("{POD}/volumes/1"),
                    json!({"name": "token", "projected": {"sources": [{"serviceAccountToken":
                        {"path": "token", "audience": "dcs-api", "expirationSeconds": 600}}]}}),
                );
            },
        ),
        (
            "agents refusing the API's tokens",
            "but the agents do not accept it",
            |b, _| {
                remove_named(
                    doc(b, "DaemonSet", AGENT),
                    &format!("{CONTAINER}/env"),
                    "DCS_KUBERNETES",
                );
            },
        ),
        (
            "the API without its token",
            "in-cluster identity needs DCS_API_SA_TOKEN_FILE",
            |b, _| {
                remove_named(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/env"),
                    "DCS_API_SA_TOKEN_FILE",
                );
            },
        ),
        (
            "the API expecting another service account",
            "DCS_AGENT_SERVICE_ACCOUNT is `dcs-system:default`, but DaemonSet dcs-system/dcs-agent \
             runs as `dcs-system:dcs-agent`",
            |b, _| {
                let api = doc(b, "Deployment", API);
                let i = index_of(
                    api,
                    &format!("{CONTAINER}/env"),
                    "DCS_AGENT_SERVICE_ACCOUNT",
                );
                set(
                    api,
                    &format!("{CONTAINER}/env/{i}/value"),
                    json!("dcs-system:default"),
                );
            },
        ),
        (
            "the agent without the API server's CA",
            "lacks `ca.crt` (from the ConfigMap kube-root-ca.crt)",
            |b, _| {
                let agent = doc(b, "DaemonSet", AGENT);
                let i = index_of(agent, &format!("{POD}/volumes"), "kube-api-access");
                let sources = agent
                    .pointer_mut(&format!("{POD}/volumes/{i}/projected/sources"))
                    .and_then(Value::as_array_mut)
                    .unwrap();
                sources.retain(|s| s.get("configMap").is_none());
            },
        ),
        (
            "no shared secret in the API",
            "DCS_AGENT_SECRET_FILE must name the shared secret",
            |b, _| {
                remove_named(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/env"),
                    "DCS_AGENT_SECRET_FILE",
                );
            },
        ),
        (
            "an extra verb for the agent",
            "ClusterRole dcs-agent: rule 0 grants `get` on `tokenreviews`",
            |b, _| {
                let role = doc(b, "ClusterRole", AGENT);
                role["rules"][0]["verbs"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("get"));
            },
        ),
        (
            "the agent reading pods",
            "binds the agent's service account dcs-agent to `list` on `pods`",
            |b, _| {
                set(
                    doc(b, "ClusterRole", AGENT),
                    "/rules/1",
                    json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}),
                );
            },
        ),
        (
            "the agent without TokenReviews",
            "service account dcs-agent: lacks `create` on `tokenreviews`",
            |b, _| {
                b.retain(|d| {
                    !(d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == AGENT)
                });
            },
        ),
        (
            "agents cut off from the API server",
            "the NetworkPolicies block the Kubernetes API server (TCP 6443), which the agent's",
            |b, _| {
                let policy = doc(b, "NetworkPolicy", AGENT);
                let rules = policy["spec"]["egress"].as_array_mut().unwrap();
                rules.retain(|r| !r.to_string().contains("6443"));
            },
        ),
        (
            "metrics on the API's port",
            "/metrics is served on the API's port",
            |b, _| {
                remove_named(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/env"),
                    "DCS_API_METRICS_LISTEN",
                );
            },
        ),
        (
            "metrics open to every namespace",
            "admits namespace workshop to the metrics port",
            |b, _| {
                let policy = doc(b, "NetworkPolicy", API);
                let rules = policy["spec"]["ingress"].as_array_mut().unwrap();
                for rule in rules.iter_mut().filter(|r| r.to_string().contains("9090")) {
                    rule["from"] = json!([{"namespaceSelector": {}}]);
                }
            },
        ),
        (
            "metrics open to the API's own namespace",
            "admits pods of dcs-system to the metrics port",
            |b, _| {
                let policy = doc(b, "NetworkPolicy", API);
                let rules = policy["spec"]["ingress"].as_array_mut().unwrap();
                for rule in rules.iter_mut().filter(|r| r.to_string().contains("9090")) {
                    rule["from"] = json!([{"podSelector": {}}]);
                }
            },
        ),
        (
            "the API port rule opened to every port",
            "admits namespace workshop to the metrics port",
            |b, _| {
                let policy = doc(b, "NetworkPolicy", API);
                remove(policy, "/spec/ingress/0/ports");
            },
        ),
        (
            "monitoring shut out",
            "the monitoring namespace cannot reach the API's metrics port",
            |b, _| {
                let policy = doc(b, "NetworkPolicy", API);
                let rules = policy["spec"]["ingress"].as_array_mut().unwrap();
                rules.retain(|r| !r.to_string().contains("9090"));
            },
        ),
        (
            "a moving image tag",
            "must name a release tag or a digest",
            |b, _| {
                set(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/image"),
                    json!("dcs-api:latest"),
                );
            },
        ),
    ];

    let mut missed = Vec::new();
    for (name, expected, mutate) in mutations {
        let mut b = base.clone();
        let mut e = examples.clone();
        mutate(&mut b, &mut e);
        let problems = check(&b, &e);
        if !problems.iter().any(|p| p.contains(expected)) {
            missed.push(format!(
                "{name}: expected a problem saying {expected:?}, got {problems:#?}"
            ));
        }
    }
    assert!(
        missed.is_empty(),
        "the policy check missed {} violation(s):\n{}",
        missed.len(),
        missed.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The manifests against the binaries and the image files

/// A built binary of the workspace, next to this test's profile directory.
fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        binary.display()
    );
    binary
}

fn help(binary: &Path, subcommand: &str) -> Result<String, String> {
    let output = Command::new(binary)
        .args([subcommand, "--help"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} {subcommand} --help` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What an image file installs: (binary path, user, cargo package).
struct ImageFile {
    binary_path: String,
    user: String,
    package: String,
}

fn image_file(name: &str) -> ImageFile {
    let path = workspace_root().join(format!("deploy/images/{name}"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let binary_path = lines
        .iter()
        .filter_map(|l| l.strip_prefix("COPY --from=build "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .next_back()
        .unwrap_or_else(|| panic!("{name}: no `COPY --from=build <built> <installed>` line"))
        .to_string();
    let user = lines
        .iter()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap_or_else(|| panic!("{name}: no USER line"))
        .to_string();
    let package = lines
        .iter()
        .find_map(|l| l.split("cargo build --release --locked -p ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name}: no `cargo build --release --locked -p <package>` line"))
        .to_string();
    let entrypoint = format!("ENTRYPOINT [\"{binary_path}\"]");
    assert!(
        lines.contains(&entrypoint.as_str()),
        "{name}: the entrypoint must be the installed binary: `{entrypoint}`"
    );
    ImageFile {
        binary_path,
        user,
        package,
    }
}

#[test]
fn manifests_match_the_binaries_and_images() {
    let mut problems = Vec::new();
    let bundle = load(&base_documents(), &example_documents(), &mut problems);
    assert_no_problems(&problems);

    // image name -> (binary, image file, cargo package)
    let images: BTreeMap<&str, (PathBuf, ImageFile, &str)> = [
        ("dcs-agent", "agent.Containerfile", "node-agent"),
        ("dcs-api", "api.Containerfile", "api"),
    ]
    .into_iter()
    .map(|(image, file, package)| (image, (built_binary(image), image_file(file), package)))
    .collect();
    for (image, (_, file, package)) in &images {
        if file.package != *package {
            problems.push(format!(
                "deploy/images: the {image} image builds package `{}`, not `{package}`",
                file.package
            ));
        }
    }
    // Read by the code itself, not through a flag: POD_IP builds the
    // agent's default advertise URL (its --advertise-url help says so);
    // RUST_LOG is tracing's log filter.
    let read_directly = ["POD_IP", "RUST_LOG"];

    for workload in &bundle.workloads {
        for container in workload.containers() {
            let what = format!("{}, container {}", workload.what, container.name);
            let image = image_name(container.image.as_deref().unwrap_or_default());
            let Some((binary, file, _)) = images.get(image) else {
                problems.push(format!(
                    "{what}: image {image} is not built by deploy/images"
                ));
                continue;
            };
            let args = container.args.clone().unwrap_or_default();
            let subcommand = args
                .iter()
                .find(|a| !a.starts_with('-'))
                .cloned()
                .unwrap_or_else(|| "serve".to_string());
            let text = match help(binary, &subcommand) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(format!("{what}: {e}"));
                    continue;
                }
            };
            for arg in args.iter().filter(|a| a.starts_with("--")) {
                let flag = arg.split('=').next().unwrap_or(arg);
                if !text.contains(&format!("{flag} ")) && !text.contains(&format!("{flag}\n")) {
                    problems.push(format!("{what}: `{image} {subcommand}` has no flag {flag}"));
                }
            }
            for env in container.env.iter().flatten() {
                let known = text.contains(&format!("[env: {}=", env.name))
                    || (read_directly.contains(&env.name.as_str())
                        && (env.name != "POD_IP" || text.contains("$POD_IP")));
                if !known {
                    problems.push(format!(
                        "{what}: `{image} {subcommand}` reads no environment variable {}",
                        env.name
                    ));
                }
            }
            if container.command.is_some() {
                problems.push(format!(
                    "{what}: sets `command`; leave the image's entrypoint ({}) in place",
                    file.binary_path
                ));
            }
            // The probes run the installed binary with a real subcommand.
            for probe in [&container.liveness_probe, &container.readiness_probe]
                .into_iter()
                .flatten()
            {
                let Some(command) = probe.exec.as_ref().and_then(|e| e.command.clone()) else {
                    continue;
                };
                if command.first() != Some(&file.binary_path) {
                    problems.push(format!(
                        "{what}: exec probe {command:?} must run {} (where the image installs it)",
                        file.binary_path
                    ));
                    continue;
                }
                let Some(sub) = command.get(1) else {
                    continue;
                };
                match help(binary, sub) {
                    Err(e) => problems.push(format!("{what}: exec probe {command:?}: {e}")),
                    Ok(text) => {
                        for word in command.iter().skip(2) {
                            if !text.contains(word.split('=').next().unwrap_or(word)) {
                                problems.push(format!(
                                    "{what}: exec probe {command:?}: `{image} {sub} --help` does \
                                     not mention {word}"
                                ));
                            }
                        }
                    }
                }
            }
            // The image's user is the one the manifest runs it as.
            let manifest_user = container
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_user)
                .or(workload
                    .spec
                    .security_context
                    .as_ref()
                    .and_then(|s| s.run_as_user));
            let image_user: Option<i64> = file.user.split(':').next().and_then(|u| u.parse().ok());
            if manifest_user.is_some() && manifest_user != image_user {
                problems.push(format!(
                    "{what}: runs as user {manifest_user:?}, but the image's USER is {}",
                    file.user
                ));
            }
        }
    }
    assert_no_problems(&problems);
}
