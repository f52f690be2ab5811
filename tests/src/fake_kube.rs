//! A local HTTP fake of the Kubernetes API server endpoints the service
//! calls: pods (get, list) and TokenReview. No API server can run on the
//! test machines, so `dcs-api --kubernetes-api-url` and `dcs-agent
//! --kubernetes-api-url` are pointed at this one.
//!
//! Every object it serves is a `k8s-openapi` value serialised with
//! `serde_json` (so `apiVersion`/`kind` are what a real server sends), and
//! errors are `Status` objects with the code and reason a real server
//! gives, which is what `kube` parses (`get_opt` turns only a `NotFound`
//! `Status` into `None`). Every request is recorded, body included.
//!
//! TokenReview answers from a table `token -> Identity`. As the real
//! server does, it authenticates a token only for the audiences it was
//! issued for: the answer's `status.audiences` is the intersection of the
//! requested and the token's audiences, and an empty intersection is
//! `authenticated: false`. [`AudienceCheck::Ignore`] turns that off (the
//! server then answers with the token's own audiences), to show the client
//! checks the audiences itself.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, Pod,
    PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Status, StatusDetails};
use serde_json::Value;

/// `user.extra` key: the node of the pod a projected token was issued for
/// (Kubernetes 1.30 and later).
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// `user.extra` key: the pod a projected token was issued for.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// `user.extra` key: that pod's uid.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// What a real API server reviews against when the request names no
/// audience.
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Who a token is, as the fake's TokenReview tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub authenticated: bool,
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// The audiences the token was issued for.
    pub audiences: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// A projected token of service account `namespace:name`, issued for
    /// these audiences.
    pub fn service_account(namespace: &str, name: &str, audiences: &[&str]) -> Self {
        Self {
            authenticated: true,
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uuid::Uuid::new_v4().to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            extra: BTreeMap::new(),
        }
    }

    /// A token the server does not accept (expired, bad signature, ...).
    pub fn rejected() -> Self {
        Self {
            authenticated: false,
            username: String::new(),
            uid: String::new(),
            groups: Vec::new(),
            audiences: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    pub fn with_extra(mut self, key: &str, value: &str) -> Self {
        self.extra
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
        self
    }

    /// Bound to a pod on this node (`node-name` extra, as newer clusters
    /// put it).
    pub fn on_node(self, node: &str) -> Self {
        self.with_extra(NODE_NAME_EXTRA, node)
    }

    /// Bound to this pod (`pod-name` and `pod-uid` extra), without the
    /// node (older clusters).
    pub fn in_pod(self, pod: &str) -> Self {
        let uid = uuid::Uuid::new_v4().to_string();
        self.with_extra(POD_NAME_EXTRA, pod)
            .with_extra(POD_UID_EXTRA, &uid)
    }
}

/// How the fake's TokenReview treats `spec.audiences`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudienceCheck {
    /// As kube-apiserver: authenticated only for an audience of the token;
    /// `status.audiences` is the intersection.
    #[default]
    Server,
    /// Authenticates whatever was asked and answers with the token's own
    /// audiences: the client must compare them itself.
    Ignore,
    /// Authenticates whatever was asked and leaves `status.audiences`
    /// empty, as an authenticator that is not audience-aware does. The
    /// TokenReview API documents such an answer as "valid for the API
    /// server's own audience", so a client that asked for another audience
    /// must not accept it.
    Omit,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// The status the fake answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<(String, String), Pod>,
    tokens: HashMap<String, Identity>,
    audience_check: AudienceCheck,
    /// When set, every request is answered with this status (an API server
    /// in trouble).
    failure: Option<u16>,
    requests: Vec<Recorded>,
}

/// The running fake; stops when dropped.
pub struct FakeKube {
    /// `http://127.0.0.1:PORT`, for `--kubernetes-api-url`.
    pub url: String,
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKube {
    /// Starts it on 127.0.0.1 and an ephemeral port (within a Tokio
    /// runtime).
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Kubernetes API");
        let port = listener.local_addr().expect("local address").port();
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            inner,
            task,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a pod (keyed by its metadata namespace and name).
    pub fn put_pod(&self, pod: Pod) {
        let namespace = pod.metadata.namespace.clone().expect("pod namespace");
        let name = pod.metadata.name.clone().expect("pod name");
        self.lock().pods.insert((namespace, name), pod);
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.lock()
            .pods
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// What TokenReview says about `token`; unknown tokens are rejected.
    pub fn add_token(&self, token: &str, identity: Identity) {
        self.lock().tokens.insert(token.to_string(), identity);
    }

    pub fn set_audience_check(&self, check: AudienceCheck) {
        self.lock().audience_check = check;
    }

    /// `Some(status)`: answer everything with this status and an
    /// `InternalError` Status body; `None`: back to normal.
    pub fn set_failure(&self, status: Option<u16>) {
        self.lock().failure = status;
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The TokenReviews posted so far.
    pub fn token_reviews(&self) -> Vec<TokenReview> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == TOKEN_REVIEWS)
            .filter_map(|r| serde_json::from_value(r.body?).ok())
            .collect()
    }

    /// The TokenReviews posted so far for this token.
    pub fn reviews_of(&self, token: &str) -> Vec<TokenReview> {
        self.token_reviews()
            .into_iter()
            .filter(|r| r.spec.token.as_deref() == Some(token))
            .collect()
    }

    /// Paths of the pod GETs so far (`/api/v1/namespaces/NS/pods/NAME`).
    pub fn pod_gets(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains("/pods/"))
            .map(|r| r.path)
            .collect()
    }
}

/// Without its state: that holds the tokens it accepts.
impl fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeKube")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().map(str::to_string);
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    let (status, answer) = match inner.failure {
        Some(code) => (
            code,
            status_object(
                code,
                "InternalError",
                "the fake API server is failing on purpose",
                None,
            ),
        ),
        None => route(&inner, &method, &path, query.as_deref(), json_body.as_ref()),
    };
    inner.requests.push(Recorded {
        method: method.to_string(),
        path,
        query,
        body: json_body,
        status,
    });
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

fn route(
    inner: &Inner,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["api", "v1", "namespaces", namespace, "pods", name]) => {
            match inner.pods.get(&(namespace.to_string(), name.to_string())) {
                Some(pod) => (200, serde_json::to_value(pod).expect("pod JSON")),
                None => (
                    404,
                    status_object(
                        404,
                        "NotFound",
                        &format!("pods \"{name}\" not found"),
                        Some(name),
                    ),
                ),
            }
        }
        ("GET", ["api", "v1", "namespaces", namespace, "pods"]) => {
            (200, pod_list(inner, Some(namespace), query))
        }
        ("GET", ["api", "v1", "pods"]) => (200, pod_list(inner, None, query)),
        ("POST", ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            match body.and_then(|b| serde_json::from_value::<TokenReview>(b.clone()).ok()) {
                Some(review) => (201, review_answer(inner, review)),
                None => (
                    400,
                    status_object(400, "BadRequest", "the body is not a TokenReview", None),
                ),
            }
        }
        _ => (
            404,
            status_object(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        ),
    }
}

/// A `Status` (kind Status, apiVersion v1), as the API server sends with
/// every error.
fn status_object(code: u16, reason: &str, message: &str, name: Option<&str>) -> Value {
    let status = Status {
        code: Some(i32::from(code)),
        message: Some(message.to_string()),
        reason: Some(reason.to_string()),
        status: Some("Failure".to_string()),
        details: name.map(|n| StatusDetails {
            name: Some(n.to_string()),
            kind: Some("pods".to_string()),
            ..Default::default()
        }),
        metadata: ListMeta::default(),
    };
    serde_json::to_value(status).expect("Status JSON")
}

/// `labelSelector` (`k=v`, `k==v`, `k!=v`, comma-separated) and
/// `fieldSelector` (`spec.nodeName=X`, `metadata.name=X`,
/// `status.phase=X`) filtering, enough for equality-based queries.
fn pod_list(inner: &Inner, namespace: Option<&str>, query: Option<&str>) -> Value {
    let mut labels: Vec<(String, String, bool)> = Vec::new();
    let mut fields: Vec<(String, String, bool)> = Vec::new();
    for (key, value) in query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        let value = percent_decode(value);
        let target = match key {
            "labelSelector" => &mut labels,
            "fieldSelector" => &mut fields,
            _ => continue,
        };
        for term in value.split(',').filter(|t| !t.is_empty()) {
            if let Some((k, v)) = term.split_once("!=") {
                target.push((k.to_string(), v.to_string(), false));
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                target.push((k.to_string(), v.to_string(), true));
            }
        }
    }
    let items: Vec<Pod> = inner
        .pods
        .iter()
        .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
        .map(|(_, pod)| pod)
        .filter(|pod| {
            labels.iter().all(|(k, v, equal)| {
                let actual = pod.metadata.labels.as_ref().and_then(|l| l.get(k));
                (actual == Some(v)) == *equal
            })
        })
        .filter(|pod| {
            fields.iter().all(|(k, v, equal)| {
                let actual = match k.as_str() {
                    "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                    "metadata.name" => pod.metadata.name.clone(),
                    "metadata.namespace" => pod.metadata.namespace.clone(),
                    "status.phase" => pod.status.as_ref().and_then(|s| s.phase.clone()),
                    _ => None,
                };
                (actual.as_ref() == Some(v)) == *equal
            })
        })
        .cloned()
        .collect();
    let list = k8s_openapi::List::<Pod> {
        items,
        metadata: ListMeta {
            resource_version: Some("1".into()),
            ..Default::default()
        },
    };
    serde_json::to_value(list).expect("PodList JSON")
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn review_answer(inner: &Inner, mut review: TokenReview) -> Value {
    let token = review.spec.token.clone().unwrap_or_default();
    let requested = review
        .spec
        .audiences
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_AUDIENCE.to_string()]);
    let invalid = |error: String| TokenReviewStatus {
        authenticated: Some(false),
        error: Some(error),
        user: Some(UserInfo::default()),
        audiences: None,
    };
    let status = match inner.tokens.get(&token) {
        None => invalid("[invalid bearer token, unknown]".into()),
        Some(identity) if !identity.authenticated => invalid(
            "[invalid bearer token, square/go-jose/jwt: validation failed, token is expired (exp)]"
                .into(),
        ),
        Some(identity) => {
            let audiences: Vec<String> = match inner.audience_check {
                AudienceCheck::Server => identity
                    .audiences
                    .iter()
                    .filter(|a| requested.contains(a))
                    .cloned()
                    .collect(),
                AudienceCheck::Ignore => identity.audiences.clone(),
                AudienceCheck::Omit => Vec::new(),
            };
            if audiences.is_empty() && inner.audience_check != AudienceCheck::Omit {
                invalid(format!(
                    "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}, unknown]",
                    identity.audiences, requested
                ))
            } else {
                TokenReviewStatus {
                    authenticated: Some(true),
                    error: None,
                    audiences: (!audiences.is_empty()).then_some(audiences),
                    user: Some(UserInfo {
                        username: Some(identity.username.clone()),
                        uid: Some(identity.uid.clone()),
                        groups: Some(identity.groups.clone()),
                        extra: (!identity.extra.is_empty()).then(|| identity.extra.clone()),
                    }),
                }
            }
        }
    };
    review.status = Some(status);
    review.metadata = ObjectMeta::default();
    serde_json::to_value(review).expect("TokenReview JSON")
}

/// A running, scheduled pod. Each container is `(name, containerd id)`;
/// `Some(id)` is a started container (`containerID: containerd://<id>`),
/// `None` one still being created (no container id yet).
pub fn running_pod(
    namespace: &str,
    name: &str,
    node: &str,
    containers: &[(&str, Option<&str>)],
) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: Some(uuid::Uuid::new_v4().to_string()),
            resource_version: Some("1".to_string()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_string()),
            containers: containers
                .iter()
                .map(|(c, _)| Container {
                    name: c.to_string(),
                    image: Some(crate::BUSYBOX_IMAGE.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_string()),
            host_ip: Some("10.0.0.1".to_string()),
            pod_ip: Some("10.244.0.10".to_string()),
            container_statuses: Some(
                containers
                    .iter()
                    .map(|(c, id)| container_status(c, id.map(|id| format!("containerd://{id}"))))
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

/// The status of one container: running with this `containerID`, or
/// waiting (`ContainerCreating`) without one.
pub fn container_status(name: &str, container_id: Option<String>) -> ContainerStatus {
    let started = container_id.is_some();
    ContainerStatus {
        name: name.to_string(),
        image: crate::BUSYBOX_IMAGE.to_string(),
        image_id: String::new(),
        ready: started,
        started: Some(started),
        restart_count: 0,
        state: Some(if started {
            ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }
        } else {
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".to_string()),
                    message: None,
                }),
                ..Default::default()
            }
        }),
        container_id,
        ..Default::default()
    }
}

/// A pod that is not running yet: phase `Pending`, its containers waiting.
pub fn pending_pod(namespace: &str, name: &str, node: &str, containers: &[&str]) -> Pod {
    let list: Vec<(&str, Option<&str>)> = containers.iter().map(|c| (*c, None)).collect();
    let mut pod = running_pod(namespace, name, node, &list);
    if let Some(status) = pod.status.as_mut() {
        status.phase = Some("Pending".to_string());
        status.pod_ip = None;
    }
    pod
}

/// Adds a label to a pod.
pub fn labelled(mut pod: Pod, key: &str, value: &str) -> Pod {
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.to_string());
    pod
}
